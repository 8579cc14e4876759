//! On-demand prices for the plan's cost estimate and `--max-cost`.
//!
//! Source: AWS's public On-Demand pricing page for Linux, US East (N. Virginia), read for the
//! instance types below (2025 list prices); US East (Ohio) and US West (Oregon) list the same
//! prices for these families. Other regions differ (by 5-60 %) and are not guessed: there the
//! cost is unknown, `plan` says so and `--max-cost` is refused unless `--ec2-hourly-price` gives
//! the price. Spot prices move all day: `--ec2-hourly-price` is their only source.

/// (instance type, USD per hour, Linux on-demand, us-east-1).
pub const ON_DEMAND_US_EAST_1: &[(&str, f64)] = &[
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("c5.4xlarge", 0.68),
    ("c6i.large", 0.085),
    ("c6i.xlarge", 0.17),
    ("c6i.2xlarge", 0.34),
    ("c6i.4xlarge", 0.68),
    ("c7i.large", 0.0893),
    ("c7i.xlarge", 0.1785),
    ("c7i.2xlarge", 0.357),
    ("c7i.4xlarge", 0.714),
    ("c7i.8xlarge", 1.428),
    ("c7g.large", 0.0725),
    ("c7g.xlarge", 0.145),
    ("c7g.2xlarge", 0.29),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("m6i.2xlarge", 0.384),
    ("m7i.large", 0.1008),
    ("m7i.xlarge", 0.2016),
    ("m7i.2xlarge", 0.4032),
    ("m7i.4xlarge", 0.8064),
    ("r7i.large", 0.1323),
    ("r7i.xlarge", 0.2646),
];

/// Regions whose on-demand prices for these families are the table's.
pub const PRICED_REGIONS: &[&str] = &["us-east-1", "us-east-2", "us-west-2"];

/// The on-demand price of `instance_type` in `region`, when the table has it.
pub fn on_demand(region: &str, instance_type: &str) -> Option<f64> {
    if !PRICED_REGIONS.contains(&region) {
        return None;
    }
    ON_DEMAND_US_EAST_1
        .iter()
        .find(|(name, _)| *name == instance_type)
        .map(|(_, price)| *price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_known_only_where_the_table_holds() {
        assert_eq!(on_demand("us-east-1", "c7i.large"), Some(0.0893));
        assert_eq!(on_demand("us-west-2", "c7i.large"), Some(0.0893));
        assert_eq!(on_demand("eu-central-1", "c7i.large"), None, "not guessed");
        assert_eq!(on_demand("us-east-1", "x9.huge"), None);
    }
}
