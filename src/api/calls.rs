//! Counts every call the API servers answer, by service, method and gRPC status code: a tower
//! layer outside every other (so calls refused by the re-exec guard or the token check count too),
//! read by the metrics endpoint (`crate::metrics`) as `api_calls_total`.
//!
//! A call counts once, when its code is known: from the response headers for an answer without a
//! body (tonic sends an error that way), else from the trailers that end the body; a body dropped
//! before its trailers (the client went away, the server ended) counts as CANCELLED. Streams
//! (`WatchEvents`, `TailLogs`) count when they end. Only the methods the servers serve get their own
//! label; any other path counts as `unknown`, so that a caller cannot grow the series without bound.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message as _;

/// Labels: `service`, `method`, `code`.
pub type CallLabels = Vec<(&'static str, String)>;

/// The gRPC status codes' canonical names, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical name of the code in a `grpc-status` value; UNKNOWN for anything else.
fn code_name(value: Option<&http::HeaderValue>) -> &'static str {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or("UNKNOWN")
}

/// The counters, and the paths (`/package.Service/Method`) that get labels of their own.
#[derive(Clone)]
pub struct Calls {
    family: Family<CallLabels, Counter>,
    known: Arc<HashSet<String>>,
}

impl Calls {
    /// Counters for the methods of the services in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s; one that does not decode adds no method).
    pub fn new(descriptor_sets: &[&[u8]]) -> Calls {
        let mut known = HashSet::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        service_name
                    } else {
                        format!("{package}.{service_name}")
                    };
                    for method in service.method {
                        known.insert(format!("/{full}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
        Calls {
            family: Family::default(),
            known: Arc::new(known),
        }
    }

    /// The family the metrics endpoint registers.
    pub fn family(&self) -> Family<CallLabels, Counter> {
        self.family.clone()
    }

    /// The `service` and `method` labels of a request's path.
    fn labels_of(&self, path: &str) -> (String, String) {
        match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if self.known.contains(path) => {
                (service.to_string(), method.to_string())
            }
            _ => ("unknown".to_string(), "unknown".to_string()),
        }
    }

    fn count(&self, (service, method): (String, String), code: &'static str) {
        self.family
            .get_or_create(&vec![
                ("service", service),
                ("method", method),
                ("code", code.to_string()),
            ])
            .inc();
    }
}

/// The layer that counts the calls of the service it wraps.
#[derive(Clone)]
pub struct CountLayer(pub Calls);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            calls: self.0.clone(),
        }
    }
}

/// A service whose calls are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    calls: Calls,
}

impl<S, Req, ResBody> tower::Service<http::Request<Req>> for Counted<S>
where
    S: tower::Service<http::Request<Req>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Req>) -> Self::Future {
        let labels = self.calls.labels_of(req.uri().path());
        let calls = self.calls.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = match answer.await {
                Ok(r) => r,
                Err(e) => {
                    calls.count(labels, "UNKNOWN");
                    return Err(e);
                }
            };
            // An answer without a body carries its code in the headers.
            let pending = match response.headers().get("grpc-status") {
                Some(v) => {
                    calls.count(labels, code_name(Some(v)));
                    None
                }
                None => Some((calls, labels)),
            };
            Ok(response.map(|body| CountedBody {
                inner: Box::pin(body),
                pending,
            }))
        })
    }
}

/// A response body that counts its call when its trailers pass (or when it is dropped without).
pub struct CountedBody<B> {
    inner: Pin<Box<B>>,
    /// The call, until it is counted.
    pending: Option<(Calls, (String, String))>,
}

impl<B> CountedBody<B> {
    fn finish(&mut self, code: &'static str) {
        if let Some((calls, labels)) = self.pending.take() {
            calls.count(labels, code);
        }
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(code_name(trailers.get("grpc-status")));
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish("UNKNOWN"),
            Poll::Ready(None) => this.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_get_their_labels_and_any_other_path_is_unknown() {
        let calls = Calls::new(&[crate::api::v1::FILE_DESCRIPTOR_SET, b"not a descriptor"]);
        assert_eq!(
            calls.labels_of("/openclaw.supervisor.v1.SupervisorService/ListInstances"),
            (
                "openclaw.supervisor.v1.SupervisorService".to_string(),
                "ListInstances".to_string()
            )
        );
        for path in [
            "/openclaw.supervisor.v1.SupervisorService/Nope",
            "/x/y",
            "/",
            "",
        ] {
            assert_eq!(
                calls.labels_of(path),
                ("unknown".to_string(), "unknown".to_string()),
                "{path}"
            );
        }
    }

    #[test]
    fn codes_by_number() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(code_name(Some(&v("0"))), "OK");
        assert_eq!(code_name(Some(&v("14"))), "UNAVAILABLE");
        assert_eq!(code_name(Some(&v("16"))), "UNAUTHENTICATED");
        assert_eq!(code_name(Some(&v("17"))), "UNKNOWN");
        assert_eq!(code_name(Some(&v("x"))), "UNKNOWN");
        assert_eq!(code_name(None), "UNKNOWN");
    }
}
