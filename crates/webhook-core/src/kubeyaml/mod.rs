//! Reading and writing manifests exactly as Kubernetes reads them.
//!
//! `kubectl apply -f` reads a stream with apimachinery's `YAMLOrJSONDecoder`: documents split
//! on `---` lines, each read by `sigs.k8s.io/yaml` (go-yaml v2 underneath: YAML 1.1 scalars,
//! merge keys) and turned into JSON. [`stream::read_stream`] splits the same way and keeps
//! every byte, so untouched documents can be copied; [`read`] reads a document with the same
//! rules; [`write`] writes a changed document so that every YAML reader, 1.1 or 1.2, reads
//! back the same values.
//!
//! Pure: no IO, no clock.

pub mod read;
pub mod resolve;
pub mod stream;
pub mod value;
pub mod write;

pub use stream::{Document, LineCounter, Stream, StreamError, Syntax, read_stream};
pub use value::{Entry, Map, Mark, Node, Value};
