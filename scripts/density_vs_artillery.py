#!/usr/bin/env python3
"""liveload's browser users against Artillery + Playwright's, on the same page, same machine.

Run by scripts/density-vs-artillery.sh, which builds liveload, installs the pinned Artillery
and starts nothing else. For each page (the demo target's `/` and `/table`) and each tool, N
users open the page, wait until it is live, and stay on it; the script then samples, over the
same CPU window, the tool's whole process tree: PSS of the browser's processes, RSS of the
generator (liveload's agent, or Artillery's Node.js), and CPU of the whole tree. Per-user
figures are the marginal cost between two user counts, so the browser's fixed cost and the
generator's start-up cancel out.

liveload is measured through `liveload bench users` (which samples the agent's process group
the same way); Artillery through its own CLI with a Playwright test function.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")
PAGES = {"demo": ("/", "body.phx-connected"), "heavy": ("/table", "#rows[data-renders]")}


def children_of():
    kids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(pid))
    return kids


def tree(root):
    kids, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def kib(text, key):
    m = re.search(rf"^{key}\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def is_browser(pid):
    return "chrom" in read(f"/proc/{pid}/cmdline").split("\0")[0]


def sample(root):
    """(browser PSS KiB, browser processes, generator RSS KiB, CPU ticks, renderers' CPU
    ticks) of root's tree."""
    pss = procs = gen = ticks = rticks = 0
    for pid in tree(root):
        stat = read(f"/proc/{pid}/stat")
        if not stat:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
        if "--type=renderer" in read(f"/proc/{pid}/cmdline"):
            rticks += int(fields[11]) + int(fields[12])
        if is_browser(pid):
            procs += 1
            pss += kib(read(f"/proc/{pid}/smaps_rollup"), "Pss:")
        else:
            gen += kib(read(f"/proc/{pid}/status"), "VmRSS:")
    return pss, procs, gen, ticks, rticks


def renderers(root):
    return sum("--type=renderer" in read(f"/proc/{p}/cmdline") for p in tree(root))


ARTILLERY_FLOW = """
module.exports = { stay };
async function stay(page) {
  await page.goto(process.env.DENSITY_URL);
  await page.waitForSelector(process.env.DENSITY_READY, { timeout: 30000 });
  await page.waitForTimeout(120000);
}
"""

ARTILLERY_SCRIPT = """
config:
  target: "{target}"
  phases:
    - duration: {ramp}
      arrivalCount: {users}
  processor: "./flow.js"
  engines:
    playwright:
      launchOptions:
        executablePath: "{chromium}"
        args: {args}
scenarios:
  - engine: playwright
    testFunction: stay
"""


def artillery_once(artillery, chromium, target, page, users, window):
    path, ready = PAGES[page]
    with tempfile.TemporaryDirectory(prefix="density-artillery-") as work:
        with open(os.path.join(work, "flow.js"), "w") as f:
            f.write(ARTILLERY_FLOW)
        args = '["--no-sandbox"]' if os.geteuid() == 0 else "[]"
        with open(os.path.join(work, "test.yml"), "w") as f:
            f.write(
                ARTILLERY_SCRIPT.format(
                    target=target, users=users, ramp=max(1, users // 20), chromium=chromium, args=args
                )
            )
        env = dict(os.environ, DENSITY_URL=target + path, DENSITY_READY=ready, DO_NOT_TRACK="1",
                   ARTILLERY_DISABLE_TELEMETRY="true")
        proc = subprocess.Popen([artillery, "run", "test.yml"], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.time() + 90
            while renderers(proc.pid) < users and time.time() < deadline:
                time.sleep(0.5)
            live = renderers(proc.pid)
            time.sleep(3 + 3)  # each page's own wait, then settle as liveload's bench does
            before, t0 = sample(proc.pid), time.time()
            time.sleep(window)
            after, t1 = sample(proc.pid), time.time()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    cpu = (after[3] - before[3]) / HZ / (t1 - t0) * 100
    rcpu = (after[4] - before[4]) / HZ / (t1 - t0) * 100
    return {"users": users, "pss": after[0] / 1024, "procs": after[1], "gen": after[2] / 1024,
            "cpu": cpu, "rcpu": rcpu, "live": live}


def liveload_once(liveload, page, counts, window):
    out = subprocess.run([liveload, "bench", "users", "--page", page, "--users",
                          ",".join(map(str, counts)), "--window", str(window)],
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        cols = line.split()
        if cols and cols[0].isdigit() and len(cols) >= 7:
            rows[int(cols[0])] = {"users": int(cols[0]), "pss": float(cols[1]),
                                  "procs": int(cols[2]), "gen": float(cols[3]),
                                  "cpu": float(cols[4]), "rcpu": float(cols[6]),
                                  "live": int(cols[0])}
    return [rows[c] for c in counts]


def marginal(rows):
    low, high = rows
    n = high["users"] - low["users"]
    return ((high["pss"] - low["pss"]) / n, (high["cpu"] - low["cpu"]) / n,
            (high["rcpu"] - low["rcpu"]) / n)


def main():
    liveload, artillery, chromium, demo_target = sys.argv[1:5]
    # The heavy page takes about half a core per user: 4 would saturate two cores, and CPU
    # per user would then be the machine's limit, not the page's cost.
    counts_of = {
        "demo": [int(c) for c in os.environ.get("DEMO_USERS", "10,30").split(",")],
        "heavy": [int(c) for c in os.environ.get("HEAVY_USERS", "1,3").split(",")],
    }
    window = int(os.environ.get("WINDOW", "10"))
    server = subprocess.Popen([demo_target, "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    target = server.stdout.readline().split()[-1].rstrip("/")
    print(f"density vs Artillery + Playwright: users {counts_of}, {window}s CPU window, {target}")
    results = []
    try:
        for page in PAGES:
            counts = counts_of[page]
            ours = liveload_once(liveload, page, counts, window)
            theirs = [artillery_once(artillery, chromium, target, page, n, window) for n in counts]
            for tool, rows in (("liveload", ours), ("artillery", theirs)):
                for r in rows:
                    print(f"{page:6} {tool:9} users {r['users']:3} (live {r['live']:3}): browser PSS "
                          f"{r['pss']:7.1f} MiB in {r['procs']:3} processes, generator RSS "
                          f"{r['gen']:6.1f} MiB, CPU {r['cpu']:6.1f} % ({r['rcpu']:5.1f} % in "
                          f"renderers)")
            results.append((page, ours, theirs))
    finally:
        server.terminate()
    print("\npage   per user: liveload MiB / Artillery MiB (ratio), CPU % / CPU % (ratio), of which "
          "in renderers (the page's own work) and elsewhere; generator RSS at the top count")
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    for page, ours, theirs in results:
        (m1, c1, r1), (m2, c2, r2) = marginal(ours), marginal(theirs)
        print(f"{page:6} {m1:6.1f} / {m2:6.1f} MiB ({ratio(m1, m2)}), {c1:5.2f} / {c2:5.2f} % "
              f"({ratio(c1, c2)}): renderers {r1:5.2f} / {r2:5.2f} % ({ratio(r1, r2)}), elsewhere "
              f"{c1 - r1:5.2f} / {c2 - r2:5.2f} % ({ratio(c1 - r1, c2 - r2)}); generator "
              f"{ours[-1]['gen']:.1f} / {theirs[-1]['gen']:.1f} MiB "
              f"({theirs[-1]['gen'] / max(ours[-1]['gen'], 0.1):.0f}x smaller)")


if __name__ == "__main__":
    main()
