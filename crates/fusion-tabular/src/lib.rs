//! # fusion-tabular
//!
//! Table columns as one modality of a fusion model, without libtorch: a row's cells (text,
//! as read from a CSV or JSON manifest) become one `f32` vector. Numeric columns give two
//! values, the standardised number and a missing-value indicator (a missing or unparsable
//! cell is `[0, 1]`); categorical columns give one value, the category's id, 0 standing for
//! missing and unseen categories. Means, deviations and category lists are fitted on
//! training rows ([`fit`]) and stored with the columns, so prediction computes exactly what
//! training saw. With the `torch` feature: [`TabularMlp`] and [`FeatureTokenizer`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use fusion_tabular::{Column, fit, encode_row};
//!
//! let rows: Vec<BTreeMap<String, String>> = vec![
//!     BTreeMap::from([("age".into(), "30".into()), ("colour".into(), "red".into())]),
//!     BTreeMap::from([("age".into(), "50".into()), ("colour".into(), "blue".into())]),
//! ];
//! let mut columns = vec![Column::numeric("age"), Column::categorical("colour")];
//! fit(&mut columns, rows.iter())?;
//! let new_row = BTreeMap::from([("colour".to_string(), "green".to_string())]);
//! // age missing: 0 and the indicator; green unseen: id 0.
//! assert_eq!(encode_row(&columns, &new_row)?, vec![0.0, 1.0, 0.0]);
//! # Ok::<(), fusion_tabular::Error>(())
//! ```

#[cfg(feature = "torch")]
mod encoder;

use std::collections::{BTreeMap, HashMap};

#[cfg(feature = "torch")]
pub use encoder::{FeatureTokenizer, TabularMlp};
use serde::{Deserialize, Serialize};

/// Most categories a column keeps (the most frequent; the rest read as unseen).
pub const MAX_CATEGORIES: usize = 10_000;

/// Most columns a table may have.
pub const MAX_COLUMNS: usize = 4096;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A column list that cannot be used; the message names the column.
    #[error("{0}")]
    Columns(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One column of a table modality, with what was fitted on the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Column {
    /// Numbers: `(x − mean) / std` and a missing-value indicator.
    Numeric {
        /// The column's name in the manifest.
        name: String,
        /// Mean of the training rows (fitted when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<f64>,
        /// Standard deviation of the training rows (fitted when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        std: Option<f64>,
    },
    /// Categories: the id of the cell's category, 1-based in `categories`; 0 for a missing
    /// cell or a category training never saw.
    Categorical {
        /// The column's name in the manifest.
        name: String,
        /// The known categories, most frequent first (fitted when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        categories: Option<Vec<String>>,
    },
}

impl Column {
    /// An unfitted numeric column.
    pub fn numeric(name: &str) -> Self {
        Self::Numeric {
            name: name.into(),
            mean: None,
            std: None,
        }
    }

    /// An unfitted categorical column.
    pub fn categorical(name: &str) -> Self {
        Self::Categorical {
            name: name.into(),
            categories: None,
        }
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Numeric { name, .. } | Self::Categorical { name, .. } => name,
        }
    }

    /// Values this column contributes to a row's vector.
    pub fn width(&self) -> usize {
        match self {
            Self::Numeric { .. } => 2,
            Self::Categorical { .. } => 1,
        }
    }

    /// Whether its statistics are known.
    pub fn is_fitted(&self) -> bool {
        match self {
            Self::Numeric { mean, std, .. } => mean.is_some() && std.is_some(),
            Self::Categorical { categories, .. } => categories.is_some(),
        }
    }

    /// Ids an embedding of this column needs (categories and the reserved 0); `None` for
    /// numbers or an unfitted column.
    pub fn cardinality(&self) -> Option<usize> {
        match self {
            Self::Categorical {
                categories: Some(categories),
                ..
            } => Some(categories.len() + 1),
            _ => None,
        }
    }
}

/// A cell read as a number: decimal or scientific notation, finite; `None` otherwise
/// (empty, `NA`, text, `inf`).
pub fn parse_number(cell: &str) -> Option<f64> {
    let value: f64 = cell.trim().parse().ok()?;
    value.is_finite().then_some(value)
}

/// Values in a row's vector: the sum of the columns' widths.
pub fn row_width(columns: &[Column]) -> usize {
    columns.iter().map(Column::width).sum()
}

/// Checks a column list: at least one column, names unique and non-empty, statistics
/// finite with a positive deviation.
pub fn check_columns(columns: &[Column]) -> Result<()> {
    if columns.is_empty() || columns.len() > MAX_COLUMNS {
        return Err(Error::Columns(format!(
            "{} columns: a table needs 1 to {MAX_COLUMNS}",
            columns.len()
        )));
    }
    for (i, column) in columns.iter().enumerate() {
        let name = column.name();
        if name.is_empty() {
            return Err(Error::Columns(format!("columns[{i}]: empty name")));
        }
        if columns[..i].iter().any(|c| c.name() == name) {
            return Err(Error::Columns(format!("columns[{i}]: `{name}` appears twice")));
        }
        match column {
            Column::Numeric { mean, std, .. } => {
                if let Some(m) = mean.filter(|m| !m.is_finite()) {
                    return Err(Error::Columns(format!(
                        "columns[{i}] (`{name}`): mean {m} is not finite"
                    )));
                }
                if let Some(s) = std.filter(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(Error::Columns(format!(
                        "columns[{i}] (`{name}`): std {s} is not a finite positive number"
                    )));
                }
            }
            Column::Categorical { categories, .. } => {
                if let Some(categories) = categories {
                    if categories.len() > MAX_CATEGORIES {
                        return Err(Error::Columns(format!(
                            "columns[{i}] (`{name}`): {} categories, at most {MAX_CATEGORIES}",
                            categories.len()
                        )));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(twice) = categories.iter().find(|c| !seen.insert(c.as_str())) {
                        return Err(Error::Columns(format!(
                            "columns[{i}] (`{name}`): category `{twice}` appears twice"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Fits the statistics a column lacks on `rows` (the training rows): mean and population
/// standard deviation of the parsable numbers (0 and 1 when there are none; 1 for a
/// constant column), categories by descending frequency then name, at most
/// [`MAX_CATEGORIES`]. Statistics already present are kept.
pub fn fit<'a>(columns: &mut [Column], rows: impl Iterator<Item = &'a BTreeMap<String, String>> + Clone) -> Result<()> {
    check_columns(columns)?;
    for column in columns.iter_mut().filter(|c| !c.is_fitted()) {
        match column {
            Column::Numeric { name, mean, std } => {
                let values: Vec<f64> = rows
                    .clone()
                    .filter_map(|row| row.get(name.as_str()).and_then(|cell| parse_number(cell)))
                    .collect();
                let (fitted_mean, deviation) = mean_and_deviation(&values);
                *mean = Some(*mean.get_or_insert(fitted_mean));
                *std = Some(std.unwrap_or(if deviation > 1e-12 { deviation } else { 1.0 }));
            }
            Column::Categorical { name, categories } => {
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for row in rows.clone() {
                    if let Some(cell) = row.get(name.as_str()).map(|c| c.trim()).filter(|c| !c.is_empty()) {
                        *counts.entry(cell).or_default() += 1;
                    }
                }
                let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                ranked.truncate(MAX_CATEGORIES);
                *categories = Some(ranked.into_iter().map(|(c, _)| c.to_string()).collect());
            }
        }
    }
    Ok(())
}

/// Mean and population standard deviation of `values` (0 and 0 for none), finite for any
/// finite values: computed on the values divided by the largest magnitude, so ±1e308
/// cells do not overflow the sums.
fn mean_and_deviation(values: &[f64]) -> (f64, f64) {
    let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if values.is_empty() || scale == 0.0 {
        return (0.0, 0.0);
    }
    let count = values.len() as f64;
    let mean = values.iter().map(|v| v / scale).sum::<f64>() / count;
    let variance = values.iter().map(|v| (v / scale - mean).powi(2)).sum::<f64>() / count;
    // Both at most 1 in scaled units, so at most `scale` once scaled back.
    (mean * scale, variance.sqrt() * scale)
}

/// A standardised value, `(x − mean) / std` without overflowing, clipped to ±[`MAX_STANDARD`].
fn standard(x: f64, mean: f64, std: f64) -> f32 {
    let z = (x - mean) / std;
    let z = if z.is_finite() { z } else { x / std - mean / std };
    // Both quotients infinite with one sign: the side of the mean decides.
    let z = if z.is_nan() {
        if x >= mean { MAX_STANDARD } else { -MAX_STANDARD }
    } else {
        z
    };
    z.clamp(-MAX_STANDARD, MAX_STANDARD) as f32
}

/// Largest standardised value given to a model, in deviations: a cell far outside the
/// training rows' range (1e308 where they held units) is clipped, not infinite.
pub const MAX_STANDARD: f64 = 1e6;

/// A row's vector (see the crate documentation); an error when a column is not fitted.
pub fn encode_row(columns: &[Column], row: &BTreeMap<String, String>) -> Result<Vec<f32>> {
    let mut values = Vec::with_capacity(row_width(columns));
    for column in columns {
        let cell = row.get(column.name()).map(|c| c.trim()).filter(|c| !c.is_empty());
        match column {
            Column::Numeric {
                mean: Some(mean),
                std: Some(std),
                ..
            } => match cell.and_then(parse_number) {
                Some(x) => values.extend([standard(x, *mean, *std), 0.0]),
                None => values.extend([0.0, 1.0]),
            },
            Column::Categorical {
                categories: Some(categories),
                ..
            } => {
                let id = cell
                    .and_then(|c| categories.iter().position(|k| k == c))
                    .map_or(0, |p| p + 1);
                values.push(id as f32);
            }
            unfitted => {
                return Err(Error::Columns(format!(
                    "column `{}` is not fitted (no statistics of the training rows)",
                    unfitted.name()
                )));
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&[(&str, &str)]]) -> Vec<BTreeMap<String, String>> {
        cells
            .iter()
            .map(|row| row.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .collect()
    }

    /// Cells of ±1e308 (finite) once overflowed the sums to an infinite deviation, which
    /// the column check then refused in Rust debug text; a cell far beyond the training
    /// range is clipped, not infinite.
    #[test]
    fn numbers_near_the_largest_double_have_finite_statistics() -> Result<()> {
        let rows: Vec<BTreeMap<String, String>> = ["1e308", "-1e308", "0", "0"]
            .iter()
            .map(|v| BTreeMap::from([("x".to_string(), v.to_string())]))
            .collect();
        let mut columns = vec![Column::numeric("x")];
        fit(&mut columns, rows.iter())?;
        let Column::Numeric {
            mean: Some(mean),
            std: Some(std),
            ..
        } = columns[0]
        else {
            panic!("not fitted: {columns:?}")
        };
        assert_eq!(mean, 0.0);
        assert!((std / (0.5f64.sqrt() * 1e308) - 1.0).abs() < 1e-12, "{std}");
        let encoded = encode_row(&columns, &rows[0])?;
        assert!((encoded[0] - 2f32.sqrt()).abs() < 1e-6, "{encoded:?}");
        let unit = vec![Column::Numeric {
            name: "x".into(),
            mean: Some(-1e308),
            std: Some(1.0),
        }];
        assert_eq!(encode_row(&unit, &rows[0])?, [MAX_STANDARD as f32, 0.0]);
        // Both quotients overflow with one sign: still the side of the mean, never NaN.
        let tiny = vec![Column::Numeric {
            name: "x".into(),
            mean: Some(1e300),
            std: Some(1e-10),
        }];
        assert_eq!(encode_row(&tiny, &rows[0])?, [MAX_STANDARD as f32, 0.0]);
        assert_eq!(encode_row(&tiny, &rows[1])?, [-(MAX_STANDARD as f32), 0.0]);
        let bad = vec![Column::Numeric {
            name: "x".into(),
            mean: Some(0.0),
            std: Some(f64::INFINITY),
        }];
        let error = check_columns(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("std inf is not a finite positive number"), "{error}");
        Ok(())
    }

    #[test]
    fn fits_and_encodes_numbers_categories_and_missing_cells() -> Result<()> {
        let train = rows(&[
            &[("x", "1"), ("c", "b")],
            &[("x", "3"), ("c", "a")],
            &[("x", ""), ("c", "b")],
            &[("x", "n/a")],
        ]);
        let mut columns = vec![Column::numeric("x"), Column::categorical("c")];
        fit(&mut columns, train.iter())?;
        // Mean of 1 and 3 is 2, population deviation 1; `b` twice before `a` once.
        assert_eq!(
            columns,
            [
                Column::Numeric {
                    name: "x".into(),
                    mean: Some(2.0),
                    std: Some(1.0)
                },
                Column::Categorical {
                    name: "c".into(),
                    categories: Some(vec!["b".into(), "a".into()])
                },
            ]
        );
        assert_eq!(encode_row(&columns, &train[0])?, [-1.0, 0.0, 1.0]);
        assert_eq!(encode_row(&columns, &train[1])?, [1.0, 0.0, 2.0]);
        assert_eq!(encode_row(&columns, &train[3])?, [0.0, 1.0, 0.0]);
        let unseen = rows(&[&[("x", "4.5"), ("c", "zebra")]]);
        assert_eq!(encode_row(&columns, &unseen[0])?, [2.5, 0.0, 0.0]);
        assert_eq!(row_width(&columns), 3);
        Ok(())
    }

    #[test]
    fn constant_and_empty_columns_keep_a_unit_scale_and_given_statistics_stay() -> Result<()> {
        let train = rows(&[&[("x", "5")], &[("x", "5")]]);
        let mut columns = vec![
            Column::numeric("x"),
            Column::numeric("nothing"),
            Column::Numeric {
                name: "given".into(),
                mean: Some(10.0),
                std: Some(2.0),
            },
        ];
        fit(&mut columns, train.iter())?;
        let stats: Vec<_> = columns
            .iter()
            .map(|c| match c {
                Column::Numeric { mean, std, .. } => (mean.unwrap_or(f64::NAN), std.unwrap_or(f64::NAN)),
                Column::Categorical { .. } => (f64::NAN, f64::NAN),
            })
            .collect();
        assert_eq!(stats, [(5.0, 1.0), (0.0, 1.0), (10.0, 2.0)]);
        Ok(())
    }

    #[test]
    fn bad_column_lists_and_unfitted_columns_are_errors() {
        let twice = [Column::numeric("a"), Column::categorical("a")];
        assert!(check_columns(&twice).is_err_and(|e| e.to_string().contains("`a` appears twice")));
        assert!(check_columns(&[]).is_err());
        let negative = [Column::Numeric {
            name: "a".into(),
            mean: Some(0.0),
            std: Some(-1.0),
        }];
        assert!(check_columns(&negative).is_err());
        let unfitted = encode_row(&[Column::numeric("age")], &BTreeMap::new());
        assert!(unfitted.is_err_and(|e| e.to_string().contains("`age` is not fitted")));
        assert_eq!(parse_number(" 1e3 "), Some(1000.0));
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("NaN"), None);
    }

    #[test]
    fn columns_read_from_json_reject_unknown_fields() {
        let ok: Column = serde_json::from_str(r#"{"kind": "numeric", "name": "age"}"#).expect("numeric");
        assert_eq!(ok, Column::numeric("age"));
        let typo = serde_json::from_str::<Column>(r#"{"kind": "categorical", "name": "c", "categores": []}"#);
        assert!(typo.is_err_and(|e| e.to_string().contains("categores")));
    }
}
