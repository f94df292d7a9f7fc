//! Binding the listen addresses of components before any of them is built (components are
//! built through the registry: [`crate::config::ComponentConfig`]).

use std::net::{SocketAddr, TcpListener};

use vla_pipeline::registry::Listeners;

use crate::service::{BoundAddrs, StartError};

pub(crate) fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind {
        what: what.to_owned(),
        endpoint: addr,
        source,
    })
}

pub(crate) fn record(addrs: &mut BoundAddrs, what: String, listener: &TcpListener) {
    if let Ok(a) = listener.local_addr() {
        addrs.insert(what, a);
    }
}

/// Binds a component's endpoints (`(relative path, "ip:port")`) under `base`.
pub(crate) fn bind_all(
    base: &str,
    endpoints: Vec<(&'static str, &str)>,
    addrs: &mut BoundAddrs,
) -> Result<Listeners, StartError> {
    let mut out = Listeners::new();
    for (rest, endpoint) in endpoints {
        let what = format!("{base}.{rest}");
        let addr = vla_pipeline::config::parse_listen_addr(endpoint).map_err(|_| {
            StartError::Endpoint {
                what: what.clone(),
                endpoint: endpoint.to_owned(),
            }
        })?;
        let listener = bind(&what, addr)?;
        record(addrs, what, &listener);
        out.insert(rest, listener);
    }
    Ok(out)
}
