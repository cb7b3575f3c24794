//! c360's session options, under the `c360.` prefix of DataFusion's configuration:
//! `SET c360.reference_time = '2026-06-30T00:00:00Z'` sets the "now" of windowed features.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Options read by c360's functions.
    pub struct C360Options {
        /// The end of every feature window (RFC 3339). Unset: the query's start time.
        pub reference_time: Option<String>, default = None
    }
}

impl ConfigExtension for C360Options {
    const PREFIX: &'static str = "c360";
}
