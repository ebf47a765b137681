//! The tables as a Ballista cluster sees them: Parquet files named by the manifests, read
//! by the executors from the store's URL.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use url::Url;
use vigil_storage::Storage;

/// The tables as Ballista sees them: Parquet files named by the manifests.
#[derive(Debug)]
pub(super) struct SegmentFiles {
    pub(super) storage: Storage,
    pub(super) store_url: Url,
}

#[async_trait]
impl SchemaProvider for SegmentFiles {
    fn table_names(&self) -> Vec<String> {
        self.storage.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(schema) = self.storage.table_schema(name) else { return Ok(None) };
        let segments = self.storage.all_segments_of(name);
        let mut paths = Vec::new();
        for segment in &segments {
            let url = self
                .store_url
                .join(&segment.path)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            paths.push(ListingTableUrl::parse(url.as_str())?);
        }
        if paths.is_empty() {
            // Nothing flushed yet: an unknown table to Ballista.
            return Ok(None);
        }
        let schema = plain_strings(&schema);
        if !segments.iter().any(|s| s.shared.is_some()) {
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config =
                ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options).with_schema(schema);
            return Ok(Some(Arc::new(ListingTable::try_new(config)?)));
        }
        Ok(Some(shared_view(name, paths, &schema)?))
    }

    fn table_exist(&self, name: &str) -> bool {
        !self.storage.all_segments_of(name).is_empty()
    }
}

/// A table some of whose rows are in shared segments: a view over the files, keeping the rows
/// whose table column names it (a file of its own has no table column: all its rows are the
/// table's). Executors get plans, not Vigil's row selections, so the rows are picked by value.
fn shared_view(name: &str, paths: Vec<ListingTableUrl>, schema: &SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::logical_expr::{LogicalPlanBuilder, ident, lit};
    let table_column = vigil_storage::shared::TABLE_COLUMN;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(table_column, DataType::Utf8, true));
    let files_schema = Arc::new(Schema::new(fields));
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config =
        ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options).with_schema(files_schema);
    let files: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
    let plan =
        LogicalPlanBuilder::scan(format!("{name} files"), datafusion::datasource::provider_as_source(files), None)?
            .filter(ident(table_column).eq(lit(name)).or(ident(table_column).is_null()))?
            .project(schema.fields().iter().map(|f| ident(f.name())))?
            .build()?;
    Ok(Arc::new(datafusion::catalog::view::ViewTable::new(plan, None)))
}

/// The schema with dictionary-encoded labels as plain strings (read from Parquet with a
/// cast). Ballista's shuffle hands stages plain strings where the plan expects dictionaries
/// ("RowConverter column schema mismatch" in a distributed GROUP BY), so its plans carry none.
fn plain_strings(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type(value.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
