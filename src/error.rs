//! The crate's one error type. Every variant says what was being read or checked, so a
//! message names the file, table, column or key, and the CLI maps each kind to an exit code.

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The project file is malformed or inconsistent.
    #[error("{path}: {message}")]
    Config { path: String, message: String },

    /// A location cannot be parsed or its object store cannot be built.
    #[error("location '{location}': {message}")]
    Location { location: String, message: String },

    /// An input table could not be opened.
    #[error("input '{input}' at '{location}' could not be opened: {}", source.cause())]
    Input {
        input: String,
        location: String,
        #[source]
        source: Box<Error>,
    },

    /// An input's rows could not be read as declared (a malformed value, a corrupt file).
    #[error("input '{input}': {message}")]
    InputData { input: String, message: String },

    /// Delta Lake failures, from delta-rs.
    #[error("{0}")]
    Delta(#[from] deltalake::DeltaTableError),

    /// Query planning or execution failures.
    #[error("{0}")]
    DataFusion(DataFusionError),

    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("{0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Json(#[from] serde_json::Error),

    /// Another run holds the output.
    #[error("concurrent run: {location} is held by {holder}; this run wrote nothing")]
    Concurrent { location: String, holder: String },

    /// The output could not be written; what was published before is intact.
    #[error("output '{location}': {message}")]
    Output { location: String, message: String },

    /// Invalid command-line usage that clap cannot express.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn location(location: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Location {
            location: location.into(),
            message: message.to_string(),
        }
    }

    pub fn output(location: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Output {
            location: location.into(),
            message: message.to_string(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The message without the location, for wrappers that already name it.
    pub fn cause(&self) -> String {
        match self {
            Error::Location { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Process exit code for this error, as documented in the README.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Config { .. } => 3,
            Error::Input { .. } | Error::InputData { .. } | Error::Location { .. } => 4,
            Error::Concurrent { .. } => 5,
            Error::Output { .. } => 6,
            Error::DataFusion(e)
                if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) =>
            {
                7
            }
            _ => 1,
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        // Unwrap our own errors that crossed a DataFusion trait boundary.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::DataFusion(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match Error::from(*inner) {
                Error::DataFusion(inner) => {
                    Error::DataFusion(DataFusionError::Context(ctx, Box::new(inner)))
                }
                ours => ours,
            },
            other => Error::DataFusion(other),
        }
    }
}
