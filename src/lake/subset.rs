//! A Parquet table restricted to some of its files: what an incremental run reads of an
//! input that gained files since the last run. The table's own scan plans the read (schema,
//! hive partitions, pushed-down filters), then files outside the subset are dropped from
//! it, so a subset reads exactly as the whole table would, less the other files' rows.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DFResult, Statistics};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug)]
pub struct FileSubset {
    inner: Arc<dyn TableProvider>,
    /// Object-store paths of the files read.
    keep: Arc<HashSet<String>>,
}

impl FileSubset {
    pub fn new(inner: Arc<dyn TableProvider>, keep: HashSet<String>) -> Self {
        Self {
            inner,
            keep: Arc::new(keep),
        }
    }
}

#[async_trait]
impl TableProvider for FileSubset {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        let keep = self.keep.clone();
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            // The same number of groups, so any declared partitioning still holds.
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .map(|g| {
                    FileGroup::new(
                        g.iter()
                            .filter(|f| keep.contains(f.object_meta.location.as_ref()))
                            .cloned()
                            .collect(),
                    )
                })
                .collect();
            // The whole table's statistics would answer count(*) for the wrong files.
            let unknown = Statistics::new_unknown(config.file_source.table_schema().table_schema());
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .with_statistics(unknown)
                .build();
            Ok(Transformed::yes(DataSourceExec::from_data_source(config)))
        })
        .map(|t| t.data)
    }
}
