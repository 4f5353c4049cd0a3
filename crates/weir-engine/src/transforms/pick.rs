//! `pick(value, rank)`: the value of the row that ranks first, for `dedup`. DataFusion's `first_value(v ORDER BY
//! o)` does the same for any ordering, but keeps each group's ordering as a `Vec<ScalarValue>` (an allocation per
//! group and column); with one key per row, as in a dedup of mostly unique keys, that dominated the run and
//! filled the memory pool. Here the rank is a single `Int64` (the caller casts dates, timestamps and integers to
//! it, which keeps their order) held in a plain vector, and values in typed vectors.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Int64Array, LargeStringArray, PrimitiveArray,
    StringArray, StringViewArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, downcast_value, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// Which rank comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Order {
    pub descending: bool,
    pub nulls_first: bool,
}

impl Order {
    /// Whether rank `a` comes strictly before rank `b`; ties keep the row seen first.
    fn before(self, a: Option<i64>, b: Option<i64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => {
                if self.descending {
                    a > b
                } else {
                    a < b
                }
            }
            (None, Some(_)) => self.nulls_first,
            (Some(_), None) => !self.nulls_first,
            (None, None) => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Pick {
    name: String,
    signature: Signature,
    order: Order,
}

impl Pick {
    pub fn new(order: Order) -> Self {
        let direction = if order.descending { "desc" } else { "asc" };
        let nulls = if order.nulls_first { "nulls_first" } else { "nulls_last" };
        Self { name: format!("pick_{direction}_{nulls}"), signature: Signature::any(2, Volatility::Immutable), order }
    }
}

impl AggregateUDFImpl for Pick {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}[value]", args.name), args.return_type().clone(), true)),
            Arc::new(Field::new(format!("{}[rank]", args.name), DataType::Int64, true)),
            Arc::new(Field::new(format!("{}[seen]", args.name), DataType::Boolean, false)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let unseen = ScalarValue::try_from(args.return_field.data_type())?;
        Ok(Box::new(PickOne { order: self.order, value: unseen, rank: None, seen: false }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        store_for(args.return_field.data_type()).is_some()
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        match store_for(args.return_field.data_type()) {
            Some(values) => Ok(Box::new(PickGroups { values, ranks: Vec::new(), seen: Vec::new(), order: self.order })),
            None => internal_err!("pick has no grouped state for {}", args.return_field.data_type()),
        }
    }
}

/// The picked values of every group, typed.
trait Values: Send + Sync {
    fn resize(&mut self, groups: usize);
    /// Copies `array[row]` into each `(group, row)`'s group, in order.
    fn set(&mut self, array: &ArrayRef, picks: &[(usize, usize)]);
    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef>;
    fn size(&self) -> usize;
}

fn store_for(ty: &DataType) -> Option<Box<dyn Values>> {
    use datafusion::arrow::datatypes::*;
    macro_rules! primitive {
        ($t:ty) => {
            Some(Box::new(Primitive::<$t> { values: Vec::new(), data_type: ty.clone() }) as Box<dyn Values>)
        };
    }
    match ty {
        DataType::Int8 => primitive!(Int8Type),
        DataType::Int16 => primitive!(Int16Type),
        DataType::Int32 => primitive!(Int32Type),
        DataType::Int64 => primitive!(Int64Type),
        DataType::UInt8 => primitive!(UInt8Type),
        DataType::UInt16 => primitive!(UInt16Type),
        DataType::UInt32 => primitive!(UInt32Type),
        DataType::UInt64 => primitive!(UInt64Type),
        DataType::Float32 => primitive!(Float32Type),
        DataType::Float64 => primitive!(Float64Type),
        DataType::Decimal128(..) => primitive!(Decimal128Type),
        DataType::Date32 => primitive!(Date32Type),
        DataType::Date64 => primitive!(Date64Type),
        DataType::Timestamp(TimeUnit::Second, _) => primitive!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => primitive!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => primitive!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => primitive!(TimestampNanosecondType),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Some(Box::new(Text { spans: Vec::new(), bytes: Vec::new(), data_type: ty.clone() }))
        }
        _ => None,
    }
}

struct Primitive<T: ArrowPrimitiveType> {
    values: Vec<Option<T::Native>>,
    /// The exact type (a time zone, a decimal's precision), which the native values do not carry.
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> Values for Primitive<T> {
    fn resize(&mut self, groups: usize) {
        self.values.resize(groups, None);
    }

    fn set(&mut self, array: &ArrayRef, picks: &[(usize, usize)]) {
        let array = array.as_primitive::<T>();
        for &(group, row) in picks {
            self.values[group] = array.is_valid(row).then(|| array.value(row));
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.values);
        Ok(Arc::new(PrimitiveArray::<T>::from_iter(taken).with_data_type(self.data_type.clone())))
    }

    fn size(&self) -> usize {
        self.values.capacity() * size_of::<Option<T::Native>>()
    }
}

/// Text values in one growing buffer: a pick that replaces another appends its bytes (the old ones stay until the
/// next emit), so no group costs an allocation of its own.
struct Text {
    spans: Vec<Option<(usize, usize)>>,
    bytes: Vec<u8>,
    data_type: DataType,
}

impl Text {
    fn text(&self, span: (usize, usize)) -> &str {
        std::str::from_utf8(&self.bytes[span.0..span.1]).expect("copied from valid UTF-8")
    }
}

impl Values for Text {
    fn resize(&mut self, groups: usize) {
        self.spans.resize(groups, None);
    }

    fn set(&mut self, array: &ArrayRef, picks: &[(usize, usize)]) {
        for &(group, row) in picks {
            let value: Option<&str> = array.is_valid(row).then(|| match array.data_type() {
                DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                DataType::Utf8View => array.as_string_view().value(row),
                _ => array.as_string::<i32>().value(row),
            });
            self.spans[group] = value.map(|text| {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(text.as_bytes());
                (start, self.bytes.len())
            });
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.spans);
        let text = taken.iter().map(|span| span.map(|s| self.text(s)));
        let array: ArrayRef = match self.data_type {
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter(text)),
            DataType::Utf8View => Arc::new(StringViewArray::from_iter(text)),
            _ => Arc::new(StringArray::from_iter(text)),
        };
        // Keep only the bytes the remaining groups use.
        let mut kept = Vec::new();
        for span in self.spans.iter_mut().flatten() {
            let start = kept.len();
            kept.extend_from_slice(&self.bytes[span.0..span.1]);
            *span = (start, kept.len());
        }
        self.bytes = kept;
        Ok(array)
    }

    fn size(&self) -> usize {
        self.spans.capacity() * size_of::<Option<(usize, usize)>>() + self.bytes.capacity()
    }
}

struct PickGroups {
    values: Box<dyn Values>,
    ranks: Vec<Option<i64>>,
    seen: Vec<bool>,
    order: Order,
}

impl PickGroups {
    /// Takes each row that ranks before its group's pick so far; rows where `take` is false are passed over.
    fn take_better(
        &mut self,
        values: &ArrayRef,
        ranks: &Int64Array,
        groups: &[usize],
        take: impl Fn(usize) -> bool,
        total: usize,
    ) -> Result<()> {
        self.values.resize(total);
        self.ranks.resize(total, None);
        self.seen.resize(total, false);
        let mut picks = Vec::new();
        for (row, &group) in groups.iter().enumerate() {
            if !take(row) {
                continue;
            }
            let rank = ranks.is_valid(row).then(|| ranks.value(row));
            if !self.seen[group] || self.order.before(rank, self.ranks[group]) {
                self.seen[group] = true;
                self.ranks[group] = rank;
                picks.push((group, row));
            }
        }
        self.values.set(values, &picks);
        Ok(())
    }
}

impl GroupsAccumulator for PickGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let ranks = downcast_value!(values[1], Int64Array);
        self.take_better(&values[0], ranks, groups, |row| filter.is_none_or(|f| f.is_valid(row) && f.value(row)), total)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        emit_to.take_needed(&mut self.ranks);
        emit_to.take_needed(&mut self.seen);
        self.values.emit(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let ranks = Int64Array::from(emit_to.take_needed(&mut self.ranks));
        let seen = BooleanArray::from(emit_to.take_needed(&mut self.seen));
        Ok(vec![self.values.emit(emit_to)?, Arc::new(ranks), Arc::new(seen)])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        let ranks = downcast_value!(values[1], Int64Array);
        let seen = values[2].as_boolean();
        self.take_better(&values[0], ranks, groups, |row| seen.value(row), total)
    }

    fn convert_to_state(&self, values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let seen: BooleanArray =
            (0..values[0].len()).map(|row| Some(filter.is_none_or(|f| f.is_valid(row) && f.value(row)))).collect();
        Ok(vec![values[0].clone(), values[1].clone(), Arc::new(seen)])
    }

    fn size(&self) -> usize {
        self.values.size() + self.ranks.capacity() * size_of::<Option<i64>>() + self.seen.capacity()
    }
}

/// One group's pick, row by row: for value types without a typed store above (booleans, lists, structs), which
/// DataFusion then aggregates with one of these per group, and for plans without grouping keys.
#[derive(Debug)]
struct PickOne {
    order: Order,
    value: ScalarValue,
    rank: Option<i64>,
    seen: bool,
}

impl PickOne {
    fn take_better(&mut self, values: &ArrayRef, ranks: &Int64Array, take: impl Fn(usize) -> bool) -> Result<()> {
        for row in 0..values.len() {
            let rank = ranks.is_valid(row).then(|| ranks.value(row));
            if take(row) && (!self.seen || self.order.before(rank, self.rank)) {
                (self.seen, self.rank, self.value) = (true, rank, ScalarValue::try_from_array(values, row)?);
            }
        }
        Ok(())
    }
}

impl Accumulator for PickOne {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ranks = downcast_value!(values[1], Int64Array);
        self.take_better(&values[0], ranks, |_| true)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (ranks, seen) = (downcast_value!(states[1], Int64Array), states[2].as_boolean());
        self.take_better(&states[0], ranks, |row| seen.value(row))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::Int64(self.rank), ScalarValue::Boolean(Some(self.seen))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.value.size()
    }
}

/// Every `pick` aggregate a `dedup` step can call, for a session that decodes plans by function name (a cluster's
/// scheduler and executors).
pub fn all_picks() -> Vec<AggregateUDF> {
    [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .map(|(descending, nulls_first)| AggregateUDF::from(Pick::new(Order { descending, nulls_first })))
        .collect()
}

/// Whether a column of type `ty` keeps its order when cast to `Int64`, so it can be a rank.
pub fn ranks_as_int64(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    #[test]
    fn groups_keep_the_first_ranked_row_across_updates_and_merges() {
        let order = Order { descending: true, nulls_first: false };
        let mut acc =
            PickGroups { values: store_for(&DataType::Utf8).unwrap(), ranks: Vec::new(), seen: Vec::new(), order };
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("a1"), Some("b1"), Some("a2"), None, Some("b0")]));
        let ranks: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(5), Some(3), Some(9), None]));
        acc.update_batch(&[values, ranks], &[0, 1, 0, 2, 1], None, 3).unwrap();
        // A partial state from elsewhere: group 0 has a later row, group 1 an earlier one.
        let other: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a9", "b-"])),
            Arc::new(Int64Array::from(vec![7, 4])),
            Arc::new(BooleanArray::from(vec![true, true])),
        ];
        acc.merge_batch(&other, &[0, 1], 3).unwrap();
        let first = acc.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(first.as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a9")]);
        let rest = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(rest.as_string::<i32>().iter().collect::<Vec<_>>(), [Some("b1"), None]);
    }

    #[test]
    fn nulls_rank_as_ordered_and_partial_emits_shift_groups() {
        let order = Order { descending: false, nulls_first: true };
        let mut acc =
            PickGroups { values: store_for(&DataType::Int32).unwrap(), ranks: Vec::new(), seen: Vec::new(), order };
        let values: ArrayRef = Arc::new(Int32Array::from(vec![10, 11, 20, 21]));
        let ranks: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(2), Some(1)]));
        acc.update_batch(&[values, ranks], &[0, 0, 1, 1], None, 2).unwrap();
        let first = acc.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(first.as_primitive::<datafusion::arrow::datatypes::Int32Type>().values(), &[11]);
        let rest = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(rest.as_primitive::<datafusion::arrow::datatypes::Int32Type>().values(), &[21]);
    }
}
