//! Shards: `--shard k/N` makes a process handle the entities whose key is `k` modulo `N`
//! (an integer key itself, any other key its FNV-1a hash). The job's SQL can split the work
//! itself by reading `:shard_index` and `:shard_count` (`WHERE meter_id % :shard_count =
//! :shard_index`), so each shard reads, builds and writes only its own entities; prescore
//! then checks that every integer key it got is this shard's, and refuses the run (exit 3)
//! when one is not. SQL that does not use them is split here after reading, with a warning:
//! every shard then reads everything.

use polars::prelude::*;

use super::contract::ContractError;
use crate::error::Error;
use crate::warehouse::frame::cell_text;
use crate::warehouse::params;

/// `--shard k/N`: this process handles the entities whose key is k modulo N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// The shard of a key: an integer key modulo the count (what `key % :shard_count`
    /// computes in SQL, for keys of either sign), any other key's FNV-1a hash modulo it.
    pub fn of(key: &str, count: u32) -> u32 {
        let n = u64::from(count.max(1));
        let slot = match key.parse::<i64>() {
            Ok(k) => k.rem_euclid(n as i64) as u64,
            Err(_) => {
                u64::from_str_radix(&super::score::features::fnv_hex(key), 16).unwrap_or(0) % n
            }
        };
        slot as u32
    }

    pub fn owns(&self, key: &str) -> bool {
        self.count <= 1 || Shard::of(key, self.count) == self.index
    }

    /// This shard's rows of `df`, read by `sql` (`what`): filtered here when the SQL did not
    /// split the work, checked when it did.
    pub fn split(
        &self,
        df: DataFrame,
        key: &str,
        sql: &str,
        what: &'static str,
    ) -> Result<DataFrame, Error> {
        if self.count <= 1 {
            return Ok(df);
        }
        let col = df
            .column(key)
            .map_err(|e| Error::internal("the key column", e))?;
        let integer = col.dtype().is_integer();
        if params::uses_shard(sql) {
            if integer {
                if let Some(r) = (0..df.height()).find(|&r| !self.owns(&cell_text(col, r))) {
                    return Err(ContractError::WrongShard {
                        what,
                        key: cell_text(col, r),
                        row: r,
                        shard: self.label(),
                        owner: Shard::of(&cell_text(col, r), self.count),
                    }
                    .into());
                }
            }
            return Ok(df);
        }
        tracing::warn!(
            shard = %self.label(),
            "{what} does not read :shard_index and :shard_count, so every shard reads every row and keeps its own; \
             add `WHERE {key} % :shard_count = :shard_index` to split the reading"
        );
        let mask: BooleanChunked = (0..df.height())
            .map(|r| Some(self.owns(&cell_text(col, r))))
            .collect();
        df.filter(&mask)
            .map_err(|e| Error::internal("the shard filter", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_go_to_their_value_modulo_the_count_like_sql_computes_it() {
        assert_eq!(Shard::of("7", 3), 1);
        assert_eq!(Shard::of("-7", 3), 2);
        assert!(Shard { index: 2, count: 4 }.owns("10"));
        assert!(!Shard { index: 2, count: 4 }.owns("11"));
        // Text keys spread by hash; every key has exactly one owner.
        let owners = (0..4)
            .filter(|&i| Shard { index: i, count: 4 }.owns("C-00017"))
            .count();
        assert_eq!(owners, 1);
    }

    #[test]
    fn pushed_down_sql_is_checked_and_a_key_of_another_shard_is_a_contract_error() {
        let df = df!("id" => [0i64, 3, 6, 7]).unwrap();
        let shard = Shard { index: 0, count: 3 };
        let sql = "SELECT id FROM t WHERE id % :shard_count = :shard_index";
        let err = shard
            .split(df.clone(), "id", sql, "the scoring SQL")
            .unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("key 7"), "{err}");
        // Without the parameters, the rows are filtered here instead.
        let kept = shard
            .split(df, "id", "SELECT id FROM t", "the scoring SQL")
            .unwrap();
        assert_eq!(kept.height(), 3);
    }
}
