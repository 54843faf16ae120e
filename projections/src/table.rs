//! Read-model rows: typed structs that know their table, and a write-back
//! cache of them.

use std::collections::{HashMap, HashSet};

use crate::error::ProjectionError;

/// A column's type: text or a 64-bit integer, nullable or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TEXT NOT NULL`.
    Text,
    /// `BIGINT NOT NULL`.
    Int,
    /// `TEXT`.
    OptText,
    /// `BIGINT`.
    OptInt,
}

impl Kind {
    /// Whether the column holds text.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Text | Self::OptText)
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

/// A read-model table: its name, key column and columns (the key first).
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// The primary key column (text).
    pub key: &'static str,
    /// Every column with its type, in the struct's order.
    pub columns: &'static [(&'static str, Kind)],
}

impl Table {
    /// The columns, comma-separated.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A Rust type a column maps to.
pub trait Col: Sized {
    /// The column's type.
    const KIND: Kind;
    /// The value to write.
    fn to_value(&self) -> Value;
    /// The value read back.
    fn from_value(value: Value) -> Option<Self>;
}

impl Col for String {
    const KIND: Kind = Kind::Text;
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl Col for i64 {
    const KIND: Kind = Kind::Int;
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
}

impl Col for Option<String> {
    const KIND: Kind = Kind::OptText;
    fn to_value(&self) -> Value {
        self.as_ref()
            .map_or(Value::Null, |t| Value::Text(t.clone()))
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            Value::Text(t) => Some(Some(t)),
            Value::Int(_) => None,
        }
    }
}

impl Col for Option<i64> {
    const KIND: Kind = Kind::OptInt;
    fn to_value(&self) -> Value {
        self.map_or(Value::Null, Value::Int)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            Value::Int(i) => Some(Some(i)),
            Value::Text(_) => None,
        }
    }
}

/// A row of a read-model table.
pub trait Row: Clone + Send + Sync + 'static {
    /// Its table.
    const TABLE: Table;
    /// Its primary key.
    fn key(&self) -> &str;
    /// Its values, in [`Table::columns`] order.
    fn values(&self) -> Vec<Value>;
    /// The row from its values.
    fn from_values(values: Vec<Value>) -> Result<Self, ProjectionError>;
}

/// Declares a row struct and its [`Row`] implementation in one place, so
/// that the struct, its column list and its conversions cannot disagree.
macro_rules! row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:literal key $key:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty ),*
        }

        impl $crate::table::Row for $name {
            const TABLE: $crate::table::Table = $crate::table::Table {
                name: $table,
                key: stringify!($key),
                columns: &[$( (stringify!($field), <$ty as $crate::table::Col>::KIND) ),*],
            };

            fn key(&self) -> &str {
                &self.$key
            }

            fn values(&self) -> Vec<$crate::table::Value> {
                vec![$( $crate::table::Col::to_value(&self.$field) ),*]
            }

            fn from_values(
                values: Vec<$crate::table::Value>,
            ) -> Result<Self, $crate::error::ProjectionError> {
                let mut values = values.into_iter();
                Ok(Self {
                    $( $field: values
                        .next()
                        .and_then(<$ty as $crate::table::Col>::from_value)
                        .ok_or($crate::error::ProjectionError::Row {
                            table: $table,
                            message: concat!("column ", stringify!($field)).into(),
                        })?, )*
                })
            }
        }
    };
}
pub(crate) use row;

/// The rows of one table that a projection has read or written: reads come
/// from here before the database, writes stay here (dirty) until the batch
/// commits. A projection's runner is the only writer of its tables (the lock
/// on PostgreSQL, the checkpoint's compare-and-set on both), so what is
/// cached stays what is stored.
#[derive(Debug)]
pub struct Cache<R: Row> {
    rows: HashMap<String, R>,
    /// Keys looked up and not stored.
    absent: HashSet<String>,
    dirty: HashSet<String>,
    /// Every stored row is in `rows` (after a reset, until the first
    /// eviction): a miss means the row does not exist.
    complete: bool,
}

impl<R: Row> Default for Cache<R> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            absent: HashSet::new(),
            dirty: HashSet::new(),
            complete: false,
        }
    }
}

impl<R: Row> Cache<R> {
    /// The row, if cached.
    pub fn get(&self, key: &str) -> Option<&R> {
        self.rows.get(key)
    }

    /// The row to change, if cached; it will be written.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut R> {
        let row = self.rows.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
        Some(row)
    }

    /// Adds or replaces a row; it will be written.
    pub fn put(&mut self, row: R) {
        let key = row.key().to_string();
        self.absent.remove(&key);
        self.dirty.insert(key.clone());
        self.rows.insert(key, row);
    }

    /// Whether a lookup of `key` needs the database.
    pub(crate) fn misses(&self, key: &str) -> bool {
        !self.complete && !self.rows.contains_key(key) && !self.absent.contains(key)
    }

    /// Whether lookups by column need the database.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Rows loaded from the database: a cached row is newer and wins.
    pub(crate) fn loaded(&mut self, rows: Vec<R>) {
        for row in rows {
            let key = row.key();
            if !self.rows.contains_key(key) {
                self.absent.remove(key);
                self.rows.insert(key.to_string(), row);
            }
        }
    }

    /// Keys looked up and not found.
    pub(crate) fn not_found(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if !self.rows.contains_key(&key) {
                self.absent.insert(key);
            }
        }
    }

    /// The cached rows that match.
    pub fn matching(&self, keep: impl Fn(&R) -> bool) -> Vec<String> {
        self.rows
            .values()
            .filter(|r| keep(r))
            .map(|r| r.key().to_string())
            .collect()
    }

    /// The changed rows' values, to write.
    pub(crate) fn dirty_values(&self) -> Vec<Vec<Value>> {
        let mut keys: Vec<&String> = self.dirty.iter().collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.rows.get(k))
            .map(Row::values)
            .collect()
    }

    /// After a commit: nothing is dirty; a cache grown past `cap` rows is
    /// emptied (and no longer complete).
    pub(crate) fn committed(&mut self, cap: usize) {
        self.dirty.clear();
        if self.rows.len() + self.absent.len() > cap {
            self.rows.clear();
            self.absent.clear();
            self.complete = false;
        }
    }

    /// Forgets everything (after a failed batch, or a reset elsewhere).
    /// `complete` says whether the table is known to be empty.
    pub(crate) fn forget(&mut self, complete: bool) {
        self.rows.clear();
        self.absent.clear();
        self.dirty.clear();
        self.complete = complete;
    }
}
