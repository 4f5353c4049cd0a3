//! Record batches and schemas between iceberg-rust's arrow (58) and Weir's (59), over Arrow's C data interface:
//! the buffers are handed over, not copied.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, RecordBatchOptions, StructArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow58::array::Array as _;
use datafusion::error::{DataFusionError, Result};

fn external(e: arrow58::error::ArrowError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A schema of iceberg-rust's arrow as one of Weir's, with its top-level fields' metadata (Iceberg's field ids)
/// left behind: DataFusion compares schemas with their metadata, and Weir's own steps carry none.
pub fn schema_from_iceberg(schema: &arrow58::datatypes::Schema) -> Result<SchemaRef> {
    let exported = arrow58::ffi::FFI_ArrowSchema::try_from(schema).map_err(external)?;
    // SAFETY: `FFI_ArrowSchema` is the `#[repr(C)]` struct of the Arrow C data interface in arrow 58 and 59 alike;
    // its release callback moves with it, so it is freed once, by the importer.
    let exported =
        unsafe { std::mem::transmute::<arrow58::ffi::FFI_ArrowSchema, arrow::ffi::FFI_ArrowSchema>(exported) };
    let schema = Schema::try_from(&exported)?;
    let fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone().with_metadata(Default::default())).collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// A batch of iceberg-rust's arrow as one of Weir's, with `schema` (which [`schema_from_iceberg`] made of the
/// batch's own schema).
pub fn batch_from_iceberg(batch: arrow58::array::RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    // A scan for no columns (`count(*)`) has only row counts, which a struct array cannot carry.
    if schema.fields().is_empty() {
        let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return Ok(RecordBatch::try_new_with_options(schema.clone(), Vec::new(), &rows)?);
    }
    let (array, exported) =
        arrow58::ffi::to_ffi(&arrow58::array::StructArray::from(batch).into_data()).map_err(external)?;
    // SAFETY: as in `schema_from_iceberg`; the array's release callback moves with it too.
    let array = unsafe { std::mem::transmute::<arrow58::ffi::FFI_ArrowArray, arrow::ffi::FFI_ArrowArray>(array) };
    // SAFETY: as above.
    let exported =
        unsafe { std::mem::transmute::<arrow58::ffi::FFI_ArrowSchema, arrow::ffi::FFI_ArrowSchema>(exported) };
    // SAFETY: both structs were just exported by arrow and describe each other.
    let data = unsafe { arrow::ffi::from_ffi(array, &exported) }?;
    let columns = StructArray::from(data).into_parts().1;
    // Nested fields may differ from the schema's in their metadata alone; a cast relabels them.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(column, field)| match column.data_type() == field.data_type() {
            true => Ok(column),
            false => arrow::compute::cast(&column, field.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A batch of Weir's as one of iceberg-rust's arrow, with `schema` (the table's, with its field ids), whose
/// column types the batch already has.
pub fn batch_to_iceberg(
    batch: RecordBatch,
    schema: &arrow58::datatypes::SchemaRef,
) -> Result<arrow58::array::RecordBatch> {
    let (array, exported) = arrow::ffi::to_ffi(&StructArray::from(batch).to_data())?;
    // SAFETY: as in `schema_from_iceberg`, the other way.
    let array = unsafe { std::mem::transmute::<arrow::ffi::FFI_ArrowArray, arrow58::ffi::FFI_ArrowArray>(array) };
    // SAFETY: as above.
    let exported =
        unsafe { std::mem::transmute::<arrow::ffi::FFI_ArrowSchema, arrow58::ffi::FFI_ArrowSchema>(exported) };
    // SAFETY: both structs were just exported by arrow and describe each other.
    let data = unsafe { arrow58::ffi::from_ffi(array, &exported) }.map_err(external)?;
    let columns = arrow58::array::StructArray::from(data).into_parts().1;
    // Nested fields lack the table's field ids in their metadata; a cast gives them the table's.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(column, field)| match column.data_type() == field.data_type() {
            true => Ok(column),
            false => arrow58::compute::cast(&column, field.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(external)?;
    arrow58::array::RecordBatch::try_new(schema.clone(), columns).map_err(external)
}

/// A schema of Weir's as one of iceberg-rust's arrow.
pub fn schema_to_iceberg(schema: &Schema) -> Result<arrow58::datatypes::Schema> {
    let exported = arrow::ffi::FFI_ArrowSchema::try_from(schema)?;
    // SAFETY: as in `schema_from_iceberg`, the other way.
    let exported =
        unsafe { std::mem::transmute::<arrow::ffi::FFI_ArrowSchema, arrow58::ffi::FFI_ArrowSchema>(exported) };
    arrow58::datatypes::Schema::try_from(&exported).map_err(external)
}
