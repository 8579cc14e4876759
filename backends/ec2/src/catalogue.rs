//! The common instance types' sizes, for a plan made without AWS credentials.
//!
//! `plan` asks EC2 (`DescribeInstanceTypes`) when it can: that answer is the account's and the
//! region's. A user who has not set up AWS yet still wants to see what a run would take and
//! cost, so for the families below `plan` falls back to this table and says so. Source: AWS's
//! instance type specifications (docs.aws.amazon.com/ec2/latest/instancetypes, general purpose,
//! compute optimised and memory optimised pages), read 2026-11. A test compares every row with
//! moto's copy of AWS's instance type data, so a typo cannot hide here.

/// Where the table's figures come from, as `plan` names it.
pub const SOURCE: &str =
    "liveload's table of common EC2 types, from AWS's instance type pages, 2026-11";

/// (instance type, vCPUs, memory in MiB).
pub const SIZES: &[(&str, u32, u64)] = &[
    ("t3.medium", 2, 4096),
    ("t3.large", 2, 8192),
    ("t3.xlarge", 4, 16384),
    ("t3.2xlarge", 8, 32768),
    ("c5.large", 2, 4096),
    ("c5.xlarge", 4, 8192),
    ("c5.2xlarge", 8, 16384),
    ("c5.4xlarge", 16, 32768),
    ("c6i.large", 2, 4096),
    ("c6i.xlarge", 4, 8192),
    ("c6i.2xlarge", 8, 16384),
    ("c6i.4xlarge", 16, 32768),
    ("c7i.large", 2, 4096),
    ("c7i.xlarge", 4, 8192),
    ("c7i.2xlarge", 8, 16384),
    ("c7i.4xlarge", 16, 32768),
    ("c7i.8xlarge", 32, 65536),
    ("c7g.large", 2, 4096),
    ("c7g.xlarge", 4, 8192),
    ("c7g.2xlarge", 8, 16384),
    ("m6i.large", 2, 8192),
    ("m6i.xlarge", 4, 16384),
    ("m6i.2xlarge", 8, 32768),
    ("m7i.large", 2, 8192),
    ("m7i.xlarge", 4, 16384),
    ("m7i.2xlarge", 8, 32768),
    ("m7i.4xlarge", 16, 65536),
    ("r7i.large", 2, 16384),
    ("r7i.xlarge", 4, 32768),
];

/// The catalogue's (vCPUs, memory MiB) of `instance_type`, when the table has it.
pub fn size_of(instance_type: &str) -> Option<(u32, u64)> {
    SIZES
        .iter()
        .find(|(name, _, _)| *name == instance_type)
        .map(|(_, cpus, mib)| (*cpus, *mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_priced_type_has_a_size() {
        // The plan's cost and its size come from two tables: they must cover the same types.
        for (name, _) in crate::prices::ON_DEMAND_US_EAST_1 {
            assert!(size_of(name).is_some(), "{name} has a price and no size");
        }
        assert_eq!(size_of("c7i.large"), Some((2, 4096)));
        assert_eq!(size_of("x9.huge"), None);
    }
}
