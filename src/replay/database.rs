//! `replay --verify postgres://…`: the same checks as for a file, on the rows of the
//! database in chain order, plus that the columns kept beside each line (`id`,
//! `conversation_id`, `seq`, `prev`, `hash`) say what the line says, so a row changed with
//! `UPDATE` is found whichever column was changed.

use crate::store::StoreError;
use crate::store::postgres::rows::{StoredRow, for_each_row};
use crate::store::verify::ChainCheck;

use super::{Problem, Verification};

/// Why a database verification stopped: a bad row, or no answer from the database.
enum Stop {
    Bad(Problem),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        Stop::Store(error)
    }
}

pub(super) async fn verify(url: &str) -> Result<Verification, StoreError> {
    let mut check = ChainCheck::default();
    let outcome = for_each_row(url, None, |row| check_row(&mut check, &row).map_err(Stop::Bad)).await;
    let first_problem = match outcome {
        Ok(()) => None,
        Err(Stop::Bad(problem)) => Some(problem),
        Err(Stop::Store(error)) => return Err(error),
    };
    Ok(Verification {
        ok: first_problem.is_none(),
        lines: check.lines(),
        conversations: check.conversations(),
        partial_last_line_bytes: 0,
        first_problem,
    })
}

fn check_row(check: &mut ChainCheck, row: &StoredRow) -> Result<(), Problem> {
    let line = check.lines() + 1;
    let problem =
        |reason: String| Problem { line, reason: format!("row id {} (position {}): {reason}", row.id, row.position) };
    if row.position != line as i64 {
        return Err(problem(format!("expected position {line}: the rows before it were deleted or renumbered")));
    }
    let event = check.check(row.line.as_bytes()).map_err(problem)?;
    let columns = [
        ("id", row.id.as_str(), event.id.as_str()),
        ("conversation_id", &row.conversation_id, &event.conversation_id),
        ("prev", &row.prev, &event.prev),
        ("hash", &row.hash, &event.hash),
    ];
    for (column, stored, in_line) in columns {
        if stored != in_line {
            return Err(problem(format!(
                "the {column} column says {stored:?} but the line says {in_line:?} (the row was edited)"
            )));
        }
    }
    if row.seq != event.seq as i64 {
        return Err(problem(format!(
            "the seq column says {} but the line says {} (the row was edited)",
            row.seq, event.seq
        )));
    }
    Ok(())
}
