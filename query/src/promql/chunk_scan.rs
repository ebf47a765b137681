//! What a sweep chunk reads, and how its stream starts.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use vigil_storage::catalog::VigilTable;

/// The rows a sweep chunk reads: a frame planned as any other, or a local read of one table
/// built straight from its provider. A 24 h query reads a dozen chunks, and planning each
/// through DataFusion's optimizer (rules that find nothing to do on a projection of a
/// filtered scan) and physical planner was a tenth of its time.
#[derive(Clone)]
pub enum ChunkScan {
    Frame(DataFrame),
    Table(Arc<TableRead>),
}

impl ChunkScan {
    pub async fn stream(self) -> DfResult<SendableRecordBatchStream> {
        Ok(self.rows().await?.stream)
    }

    /// The scan's rows, and whether they come one run per series.
    pub async fn rows(self) -> DfResult<ChunkRows> {
        match self {
            ChunkScan::Frame(frame) => Ok(ChunkRows { stream: frame.execute_stream().await?, runs_once: false }),
            ChunkScan::Table(read) => read.rows().await,
        }
    }
}

/// A chunk scan's rows as they stream.
pub struct ChunkRows {
    pub stream: SendableRecordBatchStream,
    /// True when the rows are known to come one run per series, each in time order: the
    /// read is of one source of a Vigil table, or of its shared segments of disjoint series
    /// one after the other (see `VigilTable::scan_sources`), in one stream. A series whose
    /// run has ended then has no more rows in this scan.
    pub runs_once: bool,
}

/// `SELECT projection FROM provider WHERE filters`, planned by hand: filters the provider
/// applies exactly are left to it, the rest evaluated over its rows, as DataFusion's
/// planner would.
pub struct TableRead {
    pub state: Arc<SessionState>,
    /// `state`'s task context.
    pub task: Arc<TaskContext>,
    pub provider: Arc<dyn TableProvider>,
    /// The filter's conjuncts, over the table's columns.
    pub filters: Vec<Expr>,
    /// The row's columns, named by their aliases, over the table's columns.
    pub projection: Vec<Expr>,
}

impl TableRead {
    /// The read's rows. A row of the table's columns as they are (a sweep's: labels, time
    /// and value) takes each batch's columns under the row's names; a `ProjectionExec`
    /// measured every batch it passed on (its output metrics), a fiftieth of a 7 d `rate`.
    pub async fn rows(&self) -> DfResult<ChunkRows> {
        let (input, row, runs_once) = self.input().await?;
        // Filters and projections keep their input's order.
        let runs_once = runs_once && input.properties().output_partitioning().partition_count() == 1;
        let Some((schema, columns)) = columns_only(&row, &input.schema()) else {
            let plan = Arc::new(ProjectionExec::try_new(row, input)?);
            let stream = datafusion::physical_plan::execute_stream(plan, self.task.clone())?;
            return Ok(ChunkRows { stream, runs_once });
        };
        let batches = datafusion::physical_plan::execute_stream(input, self.task.clone())?;
        let renamed = schema.clone();
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            batches.map(move |batch| {
                let batch = batch?;
                let columns = columns.iter().map(|&index| batch.column(index).clone()).collect();
                Ok(RecordBatch::try_new(renamed.clone(), columns)?)
            }),
        ));
        Ok(ChunkRows { stream, runs_once })
    }

    #[cfg(test)]
    pub async fn stream(&self) -> DfResult<SendableRecordBatchStream> {
        Ok(self.rows().await?.stream)
    }

    /// The scan with the filters it leaves to us, the row's expressions over its columns,
    /// and whether its rows come one run per series (a Vigil table says; any other is taken
    /// not to).
    async fn input(&self) -> DfResult<(Arc<dyn ExecutionPlan>, Vec<(Arc<dyn PhysicalExpr>, String)>, bool)> {
        let schema = self.provider.schema();
        let filters: Vec<&Expr> = self.filters.iter().collect();
        let pushdown = self.provider.supports_filters_pushdown(&filters)?;
        let (mut pushed, mut residual) = (Vec::new(), Vec::new());
        for (filter, how) in self.filters.iter().zip(pushdown) {
            match how {
                TableProviderFilterPushDown::Exact => pushed.push(filter.clone()),
                TableProviderFilterPushDown::Inexact => {
                    pushed.push(filter.clone());
                    residual.push(filter.clone());
                }
                TableProviderFilterPushDown::Unsupported => residual.push(filter.clone()),
            }
        }
        // The columns read: those the row and the filters left to us name.
        let mut columns = BTreeSet::new();
        for expr in self.projection.iter().chain(&residual) {
            for column in expr.column_refs() {
                columns.insert(schema.index_of(&column.name)?);
            }
        }
        let columns: Vec<usize> = columns.into_iter().collect();
        let (mut plan, runs_once) = match (self.provider.as_ref() as &dyn std::any::Any).downcast_ref::<VigilTable>() {
            Some(table) => table.scan_sources(self.state.as_ref(), Some(&columns), &pushed, None, true).await?,
            None => (self.provider.scan(self.state.as_ref(), Some(&columns), &pushed, None).await?, false),
        };
        let read = DFSchema::try_from(plan.schema().as_ref().clone())?;
        if let Some(predicate) = conjunction(residual) {
            plan = Arc::new(FilterExec::try_new(self.state.create_physical_expr(predicate, &read)?, plan)?);
        }
        let row = self
            .projection
            .iter()
            .map(|expr| {
                let (expr, name) = match expr {
                    Expr::Alias(alias) => (alias.expr.as_ref().clone(), alias.name.clone()),
                    other => (other.clone(), other.schema_name().to_string()),
                };
                Ok((self.state.create_physical_expr(expr, &read)?, name))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok((plan, row, runs_once))
    }

    /// The same read as a frame DataFusion plans, to compare with.
    #[cfg(test)]
    pub fn frame(&self) -> DfResult<DataFrame> {
        let source = datafusion::datasource::provider_as_source(self.provider.clone());
        let plan = datafusion::logical_expr::LogicalPlanBuilder::scan("chunk", source, None)?
            .filter(conjunction(self.filters.clone()).unwrap_or(datafusion::prelude::lit(true)))?
            .project(self.projection.clone())?
            .build()?;
        Ok(DataFrame::new(self.state.as_ref().clone(), plan))
    }
}

/// The schema and the input's column per field of a row whose every expression is a column
/// of `input` (a cast to a column's own type plans as the column); `None` otherwise.
fn columns_only(row: &[(Arc<dyn PhysicalExpr>, String)], input: &SchemaRef) -> Option<(SchemaRef, Vec<usize>)> {
    let mut fields = Vec::with_capacity(row.len());
    let mut columns = Vec::with_capacity(row.len());
    for (expr, name) in row {
        let column = expr.downcast_ref::<Column>()?;
        let field = input.fields().get(column.index())?;
        fields.push(field.as_ref().clone().with_name(name));
        columns.push(column.index());
    }
    Some((Arc::new(Schema::new(fields)), columns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionContext, cast, ident, lit};

    async fn collect(read: &TableRead) -> Vec<RecordBatch> {
        let stream = read.stream().await.unwrap();
        futures::TryStreamExt::try_collect(stream).await.unwrap()
    }

    /// A row of plain columns is renamed batch by batch, any other goes through a
    /// `ProjectionExec`; both read what DataFusion's own plan of the select reads.
    #[tokio::test]
    async fn rows_of_columns_are_renamed_and_other_rows_projected_as_datafusion_plans_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("job", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("api"), None, Some("db")])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let provider = Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
        let state = Arc::new(SessionContext::new().state());
        let task = Arc::new(TaskContext::from(state.as_ref()));
        let read = |projection: Vec<Expr>| TableRead {
            state: state.clone(),
            task: task.clone(),
            provider: provider.clone(),
            filters: vec![ident("ts").gt(lit(1i64))],
            projection,
        };
        let renamed = read(vec![ident("ts").alias("#ts"), cast(ident("job"), DataType::Utf8).alias("job")]);
        let projected = read(vec![ident("ts").alias("#ts"), (ident("ts") * lit(2i64)).alias("double")]);
        for (read, fields) in [(renamed, ["#ts", "job"]), (projected, ["#ts", "double"])] {
            let batches = collect(&read).await;
            let expected = read.frame().unwrap().collect().await.unwrap();
            let names: Vec<String> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
            assert_eq!(names, fields);
            assert_eq!(batches, expected);
        }
    }
}
