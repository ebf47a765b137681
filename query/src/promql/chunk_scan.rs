//! What a sweep chunk reads, and how its stream starts.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

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
        match self {
            ChunkScan::Frame(frame) => frame.execute_stream().await,
            ChunkScan::Table(read) => {
                let plan = read.plan().await?;
                datafusion::physical_plan::execute_stream(plan, read.task.clone())
            }
        }
    }
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
    pub async fn plan(&self) -> DfResult<Arc<dyn ExecutionPlan>> {
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
        let mut plan = self.provider.scan(self.state.as_ref(), Some(&columns), &pushed, None).await?;
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
        Ok(Arc::new(ProjectionExec::try_new(row, plan)?))
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
