//! Clusters a pipeline's queries can run on (`settings.engine`). One folder per engine; today Apache DataFusion
//! Ballista, whose scheduler and executors `weir scheduler` and `weir executor` start.

pub mod ballista;
