//! Budget checks: every measured figure against the board's budget.

use femtomq_boards::Budget;
use serde::Serialize;

/// The figures of one board that have a budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Measurement {
    /// Size of the stripped binary, in bytes.
    pub binary_bytes: Option<u64>,
    /// Idle VmRSS 1 s after start, in KiB.
    pub idle_rss_kb: Option<u64>,
    /// Growth of VmRSS with 1,000 idle connections, in KiB.
    pub rss_per_1000_connections_kb: Option<u64>,
}

/// The outcome of comparing one figure with its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The board.
    pub board: String,
    /// The figure (`binary bytes`, `idle RSS KiB`, `RSS per 1,000 connections KiB`).
    pub figure: &'static str,
    /// What was measured; `None` when the figure has a budget but could not be measured.
    pub measured: Option<u64>,
    /// The budget.
    pub budget: u64,
    /// Whether the figure was measured and is within its budget.
    pub ok: bool,
}

impl Check {
    /// A one-line explanation naming the board and the figure.
    pub fn message(&self) -> String {
        match (self.ok, self.measured) {
            (true, Some(measured)) => format!(
                "board `{}`: {} {measured} within budget {}",
                self.board, self.figure, self.budget
            ),
            (false, Some(measured)) => format!(
                "board `{}`: {} {measured} exceeds its budget {} (by {})",
                self.board,
                self.figure,
                self.budget,
                measured.saturating_sub(self.budget)
            ),
            (_, None) => format!(
                "board `{}`: {} has a budget of {} but was not measured",
                self.board, self.figure, self.budget
            ),
        }
    }
}

/// Compares each budgeted figure of `board` with the measurement. Figures without a budget are
/// not checked; a budgeted figure that was not measured fails (a check that silently measured
/// nothing must not pass).
pub fn check(board: &str, budget: &Budget, measured: &Measurement) -> Vec<Check> {
    [
        ("binary bytes", budget.binary_bytes, measured.binary_bytes),
        ("idle RSS KiB", budget.idle_rss_kb, measured.idle_rss_kb),
        (
            "RSS per 1,000 connections KiB",
            budget.rss_per_1000_connections_kb,
            measured.rss_per_1000_connections_kb,
        ),
    ]
    .into_iter()
    .filter_map(|(figure, budget, measured)| {
        let budget = budget?;
        Some(Check {
            board: board.to_string(),
            figure,
            measured,
            budget,
            ok: measured.is_some_and(|m| m <= budget),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measurement {
        Measurement {
            binary_bytes: Some(400_000),
            idle_rss_kb: Some(512),
            rss_per_1000_connections_kb: Some(900),
        }
    }

    #[test]
    fn passes_within_budget_and_at_the_limit() {
        let budget = Budget {
            binary_bytes: Some(400_000),
            idle_rss_kb: Some(600),
            rss_per_1000_connections_kb: Some(1_000),
        };
        let checks = check("x86_64-musl", &budget, &measured());
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    }

    #[test]
    fn fails_on_a_budget_that_is_too_small_and_names_figure_and_board() {
        let budget = Budget {
            binary_bytes: Some(400_000),
            idle_rss_kb: Some(200),
            rss_per_1000_connections_kb: Some(1_000),
        };
        let checks = check("x86_64-musl", &budget, &measured());
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        assert_eq!(failed.len(), 1, "{checks:?}");
        assert_eq!(failed[0].figure, "idle RSS KiB");
        let message = failed[0].message();
        assert!(message.contains("x86_64-musl"), "{message}");
        assert!(message.contains("idle RSS"), "{message}");
        assert!(
            message.contains("exceeds its budget 200 (by 312)"),
            "{message}"
        );
    }

    #[test]
    fn one_byte_over_fails() {
        let budget = Budget {
            binary_bytes: Some(399_999),
            ..Budget::default()
        };
        let checks = check("armv7-linux", &budget, &measured());
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].ok);
        assert!(checks[0].message().contains("binary bytes"));
    }

    #[test]
    fn a_budgeted_figure_that_was_not_measured_fails() {
        let budget = Budget {
            rss_per_1000_connections_kb: Some(1_000),
            ..Budget::default()
        };
        let measurement = Measurement {
            rss_per_1000_connections_kb: None,
            ..measured()
        };
        let checks = check("x86_64-linux", &budget, &measurement);
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].ok);
        assert!(checks[0].message().contains("not measured"));
    }

    #[test]
    fn figures_without_a_budget_are_not_checked() {
        assert!(check("riscv64-linux", &Budget::default(), &measured()).is_empty());
    }
}
