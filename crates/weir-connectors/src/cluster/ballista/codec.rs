//! The extension codecs of every process of a Weir cluster: Ballista's own, with the table providers and plans
//! of Weir's connectors that can run away from the machine that runs the pipeline (database scans, with their
//! pushdowns). A run's session plans a step for the cluster when its plan encodes with these, so anything they
//! cannot encode keeps its step on that machine.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{TableReference, internal_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::db::shipped::{self, Decoded};

/// What starts the bytes of a node Weir encoded, so that decoding tells them from Ballista's.
const WEIR_DB: &[u8] = b"weir:db\n";

fn tagged(body: Result<Vec<u8>>, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(WEIR_DB);
    buf.extend(body?);
    Ok(())
}

/// Ballista's logical codec, with database tables.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(WEIR_DB) {
            Some(body) => match shipped::decode(body)? {
                Decoded::Table(table) => Ok(table),
                Decoded::Scan(_) => internal_err!("table `{table_ref}` was sent as a scan"),
            },
            None => self.ballista.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match shipped::encode_table(node.as_ref()) {
            Some(body) => tagged(body, buf),
            None => self.ballista.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// Ballista's physical codec, with database scans.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match buf.strip_prefix(WEIR_DB) {
            Some(body) => match shipped::decode(body)? {
                Decoded::Scan(scan) => Ok(scan),
                Decoded::Table(_) => internal_err!("a database table was sent as a scan"),
            },
            None => self.ballista.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match shipped::encode_scan(node.as_ref()) {
            Some(body) => tagged(body, buf),
            None => self.ballista.try_encode(node, buf, converter),
        }
    }
}
