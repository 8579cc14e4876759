//! Fly's guest presets: size for planning, price for the plan's cost estimate.
//!
//! Sizes are Fly's preset definitions (`fly platform vm-sizes`). Prices are approximate list
//! prices of a *started* machine in USD per hour (Fly bills per second; about $1.94 a month for
//! shared-cpu-1x): for the plan's estimate only; they change over time and by region.

use crate::api::{CpuKind, Guest};

/// A named preset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Its name (`shared-cpu-2x`).
    pub name: &'static str,
    /// Its guest.
    pub guest: Guest,
    /// List price, USD per hour started.
    pub usd_per_hour: f64,
}

const fn preset(name: &'static str, kind: CpuKind, cpus: u32, memory_mb: u32, usd: f64) -> Preset {
    Preset {
        name,
        guest: Guest {
            cpu_kind: kind,
            cpus,
            memory_mb,
        },
        usd_per_hour: usd,
    }
}

/// Every preset liveload knows.
pub const PRESETS: &[Preset] = &[
    preset("shared-cpu-1x", CpuKind::Shared, 1, 256, 0.0027),
    preset("shared-cpu-2x", CpuKind::Shared, 2, 512, 0.0053),
    preset("shared-cpu-4x", CpuKind::Shared, 4, 1024, 0.0107),
    preset("shared-cpu-8x", CpuKind::Shared, 8, 2048, 0.0213),
    preset("performance-1x", CpuKind::Performance, 1, 2048, 0.0431),
    preset("performance-2x", CpuKind::Performance, 2, 4096, 0.0861),
    preset("performance-4x", CpuKind::Performance, 4, 8192, 0.1722),
    preset("performance-8x", CpuKind::Performance, 8, 16384, 0.3444),
    preset("performance-16x", CpuKind::Performance, 16, 32768, 0.6888),
];

/// Where [`PRESETS`]' sizes come from, as `plan` names it.
pub const CATALOGUE: &str = "Fly's published machine presets, `fly platform vm-sizes`, 2025";

/// The preset called `name`.
pub fn preset_named(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_grow_in_order() {
        assert_eq!(
            preset_named("performance-2x").unwrap().guest.memory_mb,
            4096
        );
        assert!(preset_named("huge-1x").is_none());
        for pair in PRESETS.windows(2) {
            if pair[0].guest.cpu_kind == pair[1].guest.cpu_kind {
                assert!(pair[1].guest.cpus > pair[0].guest.cpus);
                assert!(pair[1].usd_per_hour > pair[0].usd_per_hour);
            }
        }
    }
}
