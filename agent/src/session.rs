//! One controller connection: handshake, then commands in and metrics out.
//!
//! The agent accepts one authenticated controller at a time. Only frames from an authenticated
//! controller reset the dead-man switch, so a stranger poking the port cannot keep an orphaned
//! agent alive.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use liveload_proto::{
    AgentMessage, Assignment, ControllerMessage, PROTOCOL_VERSION, decode_controller, encode,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::AgentState;
use crate::browser::UserContext;
use crate::listener::BusyGuard;
use crate::recorder::Recorder;
use crate::users::{Gate, Setup, StopSignal, UserEnv, run_arrival, run_user};
use liveload_proto::Workload;
use prepare::prepare;

/// Serve the authenticated controller until it disconnects; `busy` keeps other controllers
/// out meanwhile. The handshake happened in `listener.rs`.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    busy: BusyGuard,
    state: Arc<AgentState>,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut frames) = ws.split();
    // From here on this controller owns the agent until it disconnects.
    let _busy = busy;
    state.touch();
    tracing::info!("controller connected");
    sink.send(Message::text(encode(&AgentMessage::Welcome {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        facts: state.facts.clone(),
    })))
    .await?;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<AgentMessage>();
    let mut run = RunControl::default();
    loop {
        tokio::select! {
            frame = frames.next() => {
                let bytes = match frame {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "controller connection failed");
                        break;
                    }
                };
                state.touch();
                match decode_controller(&bytes) {
                    Ok(message) => run.handle(message, &state, &out_tx),
                    Err(e) => {
                        let _ = out_tx.send(AgentMessage::Failed { message: format!("malformed frame: {e}") });
                    }
                }
            }
            Some(message) = out_rx.recv() => {
                sink.send(Message::text(encode(&message))).await?;
            }
        }
    }
    tracing::info!("controller disconnected");
    Ok(())
}

/// An assignment ready to start: browser up, every user's context created.
struct PreparedRun {
    assignment: Assignment,
    recorder: Arc<Recorder>,
    contexts: Vec<Option<UserContext>>,
}

/// Changes to the running users.
enum UserCommand {
    Add { first_user_id: u64, count: u64 },
    Remove { count: u64, force: bool },
}

/// The run's state as seen by one session.
#[derive(Default)]
struct RunControl {
    /// Filled by the Prepare task once the browser and the users' contexts are up.
    prepared: Arc<tokio::sync::Mutex<Option<PreparedRun>>>,
    /// Commands to the running users' task, once started.
    users: Option<mpsc::UnboundedSender<UserCommand>>,
    /// Users waiting at `coordinate` steps, once started.
    coordination: Option<Arc<crate::coordination::Coordination>>,
    /// Users assigned so far (prepared plus added, less removed), held to the agent's bound.
    assigned: u64,
    /// The bound's memory per user of the run's users (it depends on their engines).
    bound_bytes_per_user: u64,
    /// The agent, once this session took its run (see `Drop`).
    owner: Option<Arc<AgentState>>,
}

/// The session ended (the controller left or the link broke): nothing of its run may go on
/// behind its back, or a controller that connects next would find users it never started.
/// Running users are stopped (each disposes of its own context as it ends), and a prepared
/// run that never started has its contexts disposed. The agent takes no second run (see
/// `claim_run`), so stopping is final.
impl Drop for RunControl {
    fn drop(&mut self) {
        let Some(state) = self.owner.take() else {
            return;
        };
        state.retired.store(true, Ordering::SeqCst);
        force_stop(&state.stop);
        let prepared = self.prepared.clone();
        tokio::spawn(async move {
            // Waits for a Prepare still under way, then disposes of what it made.
            let run = prepared.lock().await.take();
            let browser = state.browser.lock().await.clone();
            if let (Some(run), Some(browser)) = (run, browser) {
                for context in run.contexts.into_iter().flatten() {
                    browser.end_user(context).await;
                }
            }
        });
    }
}

/// Take the agent for a run. One run at a time: a second `Prepare` while a run is prepared or
/// under way would start a second set of users beside the first. Runs follow one another only
/// within the session that started the first (`liveload run --reuse-cluster`): once that
/// session ended, the agent takes no further run, so a controller connecting later cannot
/// take over a node another sized and started.
fn claim_run(state: &AgentState) -> Result<(), String> {
    if state.retired.load(Ordering::SeqCst) {
        return Err(
            "refused: this agent's run ended with its controller's session (it takes no \
             further run)"
                .into(),
        );
    }
    if state.run_active.swap(true, Ordering::SeqCst) {
        return Err("refused: this agent has a run under way (one run at a time)".into());
    }
    // A new run starts from no stop signal, whatever stopped the last one.
    state.stop.send_replace(StopSignal::Run);
    Ok(())
}

impl RunControl {
    fn handle(
        &mut self,
        message: ControllerMessage,
        state: &Arc<AgentState>,
        out: &mpsc::UnboundedSender<AgentMessage>,
    ) {
        match message {
            ControllerMessage::Hello { .. } => {
                let _ = out.send(AgentMessage::Failed {
                    message: "already greeted".into(),
                });
            }
            ControllerMessage::Heartbeat => {}
            ControllerMessage::Prepare(assignment) => {
                let per_user = crate::facts::assignment_bytes_per_user(&assignment);
                let claimed = within_bound(state, per_user, 0, assignment.users)
                    .and_then(|()| claim_run(state));
                if let Err(message) = claimed {
                    let _ = out.send(AgentMessage::Failed { message });
                    return;
                }
                // Only a claimed run sets the bound's engine: a refused `Prepare{engine:
                // http}` must not loosen the bound of the browser run under way.
                self.bound_bytes_per_user = per_user;
                self.owner = Some(state.clone());
                self.assigned = assignment.users;
                // A run after another in this session: the last one's users are gone.
                self.users = None;
                self.coordination = None;
                let prepared = self.prepared.clone();
                let state = state.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    // Hold the slot while preparing, so a premature Start is refused.
                    let mut slot = prepared.lock().await;
                    let reply = match prepare(&state, *assignment).await {
                        Ok((reply, run)) => {
                            *slot = Some(run);
                            reply
                        }
                        Err(message) => {
                            state.run_active.store(false, Ordering::SeqCst);
                            AgentMessage::Failed { message }
                        }
                    };
                    // Release the slot before answering: the controller's Start may arrive
                    // the moment it reads Prepared, and must find the run ready, not locked.
                    drop(slot);
                    let _ = out.send(reply);
                });
            }
            ControllerMessage::Start => {
                if self.users.is_some() {
                    return;
                }
                let Ok(mut prepared) = self.prepared.try_lock() else {
                    let _ = out.send(AgentMessage::Failed {
                        message: "start before prepare finished".into(),
                    });
                    return;
                };
                let Some(run) = prepared.take() else {
                    let _ = out.send(AgentMessage::Failed {
                        message: "start without a prepared assignment".into(),
                    });
                    return;
                };
                let (commands, commands_rx) = mpsc::unbounded_channel();
                self.users = Some(commands);
                let coordination = Arc::new(crate::coordination::Coordination::new(out.clone()));
                self.coordination = Some(coordination.clone());
                let channels = (out.clone(), commands_rx, coordination);
                let state = state.clone();
                tokio::spawn(run_users(state.clone(), run, channels));
            }
            ControllerMessage::Stop { force } => {
                let signal = if force {
                    StopSignal::Force
                } else {
                    StopSignal::Graceful
                };
                let _ = state.stop.send(signal);
            }
            ControllerMessage::AddUsers {
                first_user_id,
                count,
            } => {
                if let Err(message) =
                    within_bound(state, self.bound_bytes_per_user, self.assigned, count)
                {
                    let _ = out.send(AgentMessage::Failed { message });
                    return;
                }
                let add = UserCommand::Add {
                    first_user_id,
                    count,
                };
                if self.command(add, out) {
                    self.assigned += count;
                }
            }
            ControllerMessage::RemoveUsers { count, force } => {
                if self.command(UserCommand::Remove { count, force }, out) {
                    self.assigned = self.assigned.saturating_sub(count);
                }
            }
            ControllerMessage::Shutdown => state.shut_down("the controller asked"),
            ControllerMessage::Release {
                point,
                group_id,
                wanted,
                members,
            } => {
                if let Some(coordination) = &self.coordination {
                    coordination.release(&point, group_id, wanted, &members);
                }
            }
        }
    }
}

impl RunControl {
    /// Pass `command` to the running users; `false` (and a `Failed` sent) when none run.
    fn command(&self, command: UserCommand, out: &mpsc::UnboundedSender<AgentMessage>) -> bool {
        let sent = self
            .users
            .as_ref()
            .is_some_and(|users| users.send(command).is_ok());
        if !sent {
            let _ = out.send(AgentMessage::Failed {
                message: "users can be added or removed only while the run goes on".into(),
            });
        }
        sent
    }
}

/// Refuse `more` users on top of `assigned` beyond the agent's own bound (see
/// `facts::user_bound`), whatever the controller planned: a token holder talking to the agent
/// directly must not make it open more browser contexts than the node could ever hold.
fn within_bound(state: &AgentState, per_user: u64, assigned: u64, more: u64) -> Result<(), String> {
    let bound = crate::facts::user_bound(&state.facts, per_user);
    let total = assigned.saturating_add(more);
    if total <= bound {
        return Ok(());
    }
    let rule = match state.facts.max_users {
        Some(max) => format!("its max_users ({max})"),
        None => format!(
            "{} MiB of memory / {} KiB per user",
            state.facts.effective_memory_bytes >> 20,
            (state.facts.effective_memory_bytes / bound.max(1)) >> 10
        ),
    };
    Err(format!(
        "refused: {total} users exceed this node's bound of {bound} users ({rule})"
    ))
}

/// How user `user_id` starts: with its context made at `Prepare` (the next of `contexts`),
/// after its failed setup, with one to make now, or with none (a protocol user, or no
/// browser on this node).
fn setup_of(
    env: &UserEnv,
    user_id: u64,
    contexts: &mut impl Iterator<Item = Option<crate::browser::UserContext>>,
) -> Setup {
    if env.browser.is_none() || env.assignment.engine_of(user_id).is_protocol() {
        return Setup::None;
    }
    match contexts.next() {
        Some(Some(context)) => Setup::Ready(context),
        Some(None) => Setup::Failed,
        None => Setup::CreateNow,
    }
}

/// The run is over (every user has ended): free the agent for a next run of this session,
/// then say so. Freed first, so a controller answering `Finished` with the next `Prepare` at
/// once finds the agent free.
fn finished(
    state: &AgentState,
    out: &mpsc::UnboundedSender<AgentMessage>,
    last: liveload_proto::MetricsSnapshot,
) {
    state.run_active.store(false, Ordering::SeqCst);
    let _ = out.send(AgentMessage::Finished(last));
}

/// Start the users (spread by `start_interval_ms`), take add/remove commands, stream a
/// snapshot every second, and send `Finished` when the last user has ended.
async fn run_users(
    state: Arc<AgentState>,
    run: PreparedRun,
    (out, mut commands, coordination): (
        mpsc::UnboundedSender<AgentMessage>,
        mpsc::UnboundedReceiver<UserCommand>,
        Arc<crate::coordination::Coordination>,
    ),
) {
    let started = Instant::now();
    let PreparedRun {
        assignment,
        recorder,
        contexts,
    } = run;
    let browser = if !assignment.needs_browser() {
        None
    } else {
        state.browser.lock().await.clone()
    };
    crate::steps::start_sequence(assignment.first_user_id);
    recorder.records.configure(assignment.trace_file, started);
    let tracer = assignment.diagnostics.trace.as_ref().map(|trace| {
        recorder.trace_console();
        crate::trace::Tracer::new(out.clone(), trace.screenshots)
    });
    let env = Arc::new(UserEnv {
        deadline: started + Duration::from_millis(assignment.duration_ms),
        browser,
        recorder: recorder.clone(),
        stop: state.stop.subscribe(),
        gate: assignment.throttle.as_ref().map(Gate::new),
        assignment,
        started,
        tracer,
        coordination: Some(coordination),
    });
    if let Workload::Open {
        rate_per_s,
        ramp_to_per_s,
    } = env.assignment.workload
    {
        debug_assert!(
            contexts.is_empty(),
            "no contexts are made ahead for arrivals"
        );
        run_arrivals(env, rate_per_s, ramp_to_per_s, started, &out).await;
        if !state.gave_up_on_controller() {
            finished(&state, &out, recorder.take(started.elapsed()));
        }
        return;
    }
    let interval = Duration::from_millis(env.assignment.start_interval_ms);
    let first = env.assignment.first_user_id;
    // Users not started yet (the initial ones, spread by the start interval), and the stop
    // switches of the started ones, most recent last.
    // The contexts made at `Prepare` are the browser users', in user order.
    let mut contexts = contexts.into_iter();
    let mut waiting: std::collections::VecDeque<(u64, Setup)> = (0..env.assignment.users)
        .map(|i| (first + i, setup_of(&env, first + i, &mut contexts)))
        .collect();
    let batch = env.assignment.start_batch.max(1);
    let mut started_in_batch = 0;
    let mut running: Vec<watch::Sender<StopSignal>> = Vec::new();
    let mut users = tokio::task::JoinSet::new();
    let mut next_start = started;
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut commands_open = true;
    let mut stop = env.stop.clone();
    loop {
        if waiting.is_empty() && users.is_empty() {
            break;
        }
        tokio::select! {
            // Stopped: users not started yet never will be; their contexts go now, not when
            // their start time comes.
            Ok(()) = stop.changed(), if !waiting.is_empty() => {
                if *stop.borrow() != StopSignal::Run {
                    for (_, setup) in waiting.drain(..) {
                        dispose_unused(&env, setup);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_start), if !waiting.is_empty() => {
                let (user_id, setup) = waiting.pop_front().expect("not empty");
                let (stop, own_stop) = watch::channel(StopSignal::Run);
                running.push(stop);
                users.spawn(run_user(env.clone(), user_id, setup, own_stop));
                started_in_batch += 1;
                if started_in_batch == batch {
                    started_in_batch = 0;
                    next_start += interval;
                }
            }
            Some(_) = users.join_next(), if !users.is_empty() => {}
            command = commands.recv(), if commands_open => match command {
                Some(UserCommand::Add { first_user_id, count }) => {
                    let mut none = std::iter::empty();
                    waiting.extend(
                        (0..count).map(|i| (first_user_id + i, setup_of(&env, first_user_id + i, &mut none))),
                    );
                }
                Some(UserCommand::Remove { count, force }) => {
                    // Users still waiting to start go first, then the most recent ones.
                    let mut left = count;
                    while left > 0 {
                        let Some((_, setup)) = waiting.pop_back() else { break };
                        dispose_unused(&env, setup);
                        left -= 1;
                    }
                    let signal = if force { StopSignal::Force } else { StopSignal::Graceful };
                    while left > 0 {
                        match running.pop() {
                            Some(stop) if !stop.is_closed() => {
                                let _ = stop.send(signal);
                                left -= 1;
                            }
                            Some(_) => {} // Already ended.
                            None => break,
                        }
                    }
                }
                None => commands_open = false,
            },
            _ = ticker.tick() => {
                let _ = out.send(AgentMessage::Snapshot(recorder.take(started.elapsed())));
            }
        }
    }
    if !state.gave_up_on_controller() {
        finished(&state, &out, recorder.take(started.elapsed()));
    }
}

/// Dispose of the context of a user who will never start (removed while waiting).
fn dispose_unused(env: &UserEnv, setup: Setup) {
    if let (Setup::Ready(context), Some(browser)) = (setup, env.browser.clone()) {
        tokio::spawn(async move { browser.end_user(context).await });
    }
}

/// The open model on this node: arrivals on schedule, at most `users` in progress, the rest
/// dropped and counted (`arrivals_dropped`); a snapshot every second.
async fn run_arrivals(
    env: Arc<UserEnv>,
    rate: f64,
    ramp_to: f64,
    started: Instant,
    out: &mpsc::UnboundedSender<AgentMessage>,
) {
    let duration = Duration::from_millis(env.assignment.duration_ms).as_secs_f64();
    let cap = env.assignment.users.max(1) as usize;
    let first = env.assignment.first_user_id;
    let mut arrivals = tokio::task::JoinSet::new();
    let mut k: u64 = 1;
    let mut next = crate::users::arrival_time(k, rate, ramp_to, duration);
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut stop = env.stop.clone();
    loop {
        if next.is_none() && arrivals.is_empty() {
            break;
        }
        let due = next.map(|t| started + Duration::from_secs_f64(t));
        tokio::select! {
            _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                if *stop.borrow() != StopSignal::Run {
                    next = None;
                    continue;
                }
                if arrivals.len() < cap {
                    let user_id = first + (k - 1) % cap as u64;
                    arrivals.spawn(run_arrival(env.clone(), user_id, due.expect("guarded")));
                } else {
                    env.recorder.count("arrivals_dropped", 1);
                }
                k += 1;
                next = crate::users::arrival_time(k, rate, ramp_to, duration);
            }
            Some(_) = arrivals.join_next(), if !arrivals.is_empty() => {}
            _ = stop.changed() => {
                if *stop.borrow() != StopSignal::Run {
                    next = None;
                }
            }
            _ = ticker.tick() => {
                let _ = out.send(AgentMessage::Snapshot(env.recorder.take(started.elapsed())));
            }
        }
    }
}

impl AgentState {
    /// An authenticated controller spoke: reset the dead-man switch.
    pub fn touch(&self) {
        *self.last_heard.lock().expect("not poisoned") = Instant::now();
    }
}

/// Tell watchers the stop signal; used at shutdown.
pub fn force_stop(stop: &watch::Sender<StopSignal>) {
    let _ = stop.send(StopSignal::Force);
}

mod prepare;
#[cfg(test)]
mod tests;
