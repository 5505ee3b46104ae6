//! The `inlet` CLI's reusable parts: the local HTTP server and worker loop, which the
//! end-to-end tests run in-process as well; request signing, which `inlet sign` and the
//! load generator share; the load generator itself (`inlet-load`); and the deploy check
//! (`inlet check --template`); where `inlet dev` places its threads.

pub mod deploy;
pub mod load;
pub mod placement;
pub mod runtime_stub;
pub mod server;
pub mod sign;

/// An error and each of its causes, `: `-joined: reqwest's "error sending request" alone hides
/// whether the name did not resolve or the connection was refused.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_cause_is_named_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            super::causes(&Outer(refused)),
            "error sending request: connection refused"
        );
    }
}
