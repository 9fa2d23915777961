//! What an expression evaluates to.

use tidemark_engine::Series;

use tidemark_engine::memstore::Point;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    /// Its labels (`__name__` included while the name is kept).
    pub series: Series,
    /// The time of the sample it came from (a selector's result keeps the
    /// sample's own time, for `timestamp()`); the evaluation time otherwise.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One series of a range vector: its points in the range, staleness
/// markers removed.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    /// Its labels.
    pub series: Series,
    /// Points, oldest first.
    pub points: Vec<Point>,
}

/// The value of an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string (only as a function argument).
    String(String),
    /// An instant vector.
    Vector(Vec<Element>),
    /// A range vector.
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// The type's name as PromQL writes it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "instant vector",
            Value::Matrix(_) => "range vector",
        }
    }
}
