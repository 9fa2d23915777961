//! The specs of the connectors whose streams are samples, declared in one
//! line each: [`samples_sink!`] and [`samples_source!`] implement
//! `Validate` for the config and every method of `SinkSpec` or
//! `SourceSpec` for the validated connector. Each use still answers every
//! question the trait asks (holdback, live subscribers; finiteness, ingest):
//! the macros take them as required arguments, so nothing defaults.

/// `Validate<dyn $spec>` for `$config` through `$f`, a
/// `fn(&$config) -> Result<Arc<dyn $spec>, Vec<ConfigError>>`.
macro_rules! validated {
    ($config:ty, $spec:ident, $f:expr) => {
        impl tidemark_engine::spec::Validate<dyn tidemark_engine::spec::$spec> for $config {
            fn validated(
                &self,
            ) -> Result<
                std::sync::Arc<dyn tidemark_engine::spec::$spec>,
                Vec<tidemark_engine::component::ConfigError>,
            > {
                let f: fn(
                    &$config,
                ) -> Result<
                    std::sync::Arc<dyn tidemark_engine::spec::$spec>,
                    Vec<tidemark_engine::component::ConfigError>,
                > = $f;
                f(self)
            }
        }
    };
}

/// `Validate<dyn SinkSpec>` for `$config` and `SinkSpec` for `$sink`, a
/// sink of samples built by its inherent `build(samples, ctx)`. With
/// `$config => $sink`, the config's `validate()` returns the validated
/// sink; with `$config => self`, it returns `()` and the config is the
/// sink. `holdback` is a `fn(&$sink) -> Time`; `touches` a
/// `fn(&$sink) -> Vec<Resource>`.
macro_rules! samples_sink {
    ($config:ty => self, holdback: $holdback:expr, serves_live: $live:expr, touches: $touches:expr $(,)?) => {
        validated!($config, SinkSpec, |c| {
            c.validate()?;
            Ok(std::sync::Arc::new(c.clone()))
        });
        samples_sink!(@spec $config, $holdback, $live, $touches);
    };
    ($config:ty => $sink:ty, holdback: $holdback:expr, serves_live: $live:expr, touches: $touches:expr $(,)?) => {
        validated!($config, SinkSpec, |c| c.validate().map(|s| std::sync::Arc::new(s) as _));
        samples_sink!(@spec $sink, $holdback, $live, $touches);
    };
    (@spec $sink:ty, $holdback:expr, $live:expr, $touches:expr) => {
        impl tidemark_engine::spec::SinkSpec for $sink {
            fn takes(&self) -> &'static [tidemark_engine::spec::StreamKind] {
                &[tidemark_engine::spec::StreamKind::Samples]
            }
            fn holdback(&self) -> tidemark_engine::time::Time {
                let holdback: fn(&$sink) -> tidemark_engine::time::Time = $holdback;
                holdback(self)
            }
            fn serves_live(&self) -> bool {
                $live
            }
            fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
                let touches: fn(&$sink) -> Vec<tidemark_engine::spec::Resource> = $touches;
                touches(self)
            }
            fn build<'scope>(
                &self,
                input: tidemark_engine::spec::AnyStream<'scope>,
                ctx: tidemark_engine::component::SinkContext,
            ) -> tidemark_engine::runtime::ProgressStream<'scope> {
                <$sink>::build(self, input.into_samples(), ctx)
            }
        }
    };
}

/// `Validate<dyn SourceSpec>` for `$config`, whose `validate()` returns
/// `$source`, and `SourceSpec` for `$source`, a source of samples built by
/// its inherent `build(scope, ctx)`. `finite` is a `fn(&$source) -> bool`;
/// `touches` a `fn(&$source) -> Vec<Resource>`; `positions` a
/// `fn(&$source) -> Option<String>`: `None` for a source that cannot record
/// its position in checkpoints (yet), else what its recorded positions
/// depend on (see `SourceSpec::identity`).
macro_rules! samples_source {
    ($config:ty => $source:ty, finite: $finite:expr, needs_ingest: $ingest:expr, touches: $touches:expr, positions: $positions:expr $(,)?) => {
        validated!($config, SourceSpec, |c| c
            .validate()
            .map(|s| std::sync::Arc::new(s) as _));
        impl tidemark_engine::spec::SourceSpec for $source {
            fn emits(&self) -> tidemark_engine::spec::StreamKind {
                tidemark_engine::spec::StreamKind::Samples
            }
            fn is_finite(&self) -> bool {
                let finite: fn(&$source) -> bool = $finite;
                finite(self)
            }
            fn needs_ingest(&self) -> bool {
                $ingest
            }
            fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
                let touches: fn(&$source) -> Vec<tidemark_engine::spec::Resource> = $touches;
                touches(self)
            }
            fn checkpointed(&self) -> tidemark_engine::checkpoint::Checkpointed {
                let positions: fn(&$source) -> Option<String> = $positions;
                match positions(self) {
                    Some(_) => tidemark_engine::checkpoint::Checkpointed::Kept,
                    None => tidemark_engine::checkpoint::Checkpointed::NotYet,
                }
            }
            fn identity(&self) -> String {
                let positions: fn(&$source) -> Option<String> = $positions;
                positions(self).unwrap_or_else(|| format!("{self:?}"))
            }
            fn build<'scope>(
                &self,
                scope: tidemark_engine::runtime::PipelineScope<'scope>,
                ctx: tidemark_engine::component::SourceContext,
            ) -> tidemark_engine::spec::AnyStream<'scope> {
                tidemark_engine::spec::AnyStream::Samples(<$source>::build(self, scope, ctx))
            }
        }
    };
}
