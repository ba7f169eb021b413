//! Live sync in the browser: the server's pokes turned into pulls
//! ([`link`]), subscriptions that re-run when records change
//! ([`subscriptions`]), and the change feed that tells both about changes
//! made here or in another tab ([`changes`]). `SyncClient` holds one
//! [`LiveParts`]; this module converts and delegates, the decisions are in
//! `engine::live` and `engine::query`.

mod changes;
mod link;
mod subscriptions;

pub(crate) use changes::ObservedRecords;

use crate::api::client::{to_js_value, Inner, JsTokens, SyncClient};
use crate::engine::live::LiveOptions;
use crate::store::idb::IdbStore;
use changes::ChangeFeed;
use link::LinkDriver;
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// `getLiveStatus()`: the database's live connection as this client sees it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    /// `off`, `connecting`, `open` or `closed`.
    pub state: &'static str,
    /// Whether this client holds the connection (one per database across
    /// tabs and workers).
    pub leader: bool,
    /// When the next reconnection is due, while closed.
    #[serde(
        with = "crate::engine::time::iso::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<f64>,
}

/// The live half of a client.
pub(crate) struct LiveParts {
    /// `None`: live is off (no `serverUrl`/`entityTypes`, `live: false`, or
    /// a scope without `EventSource`).
    options: Option<(LiveOptions, String)>,
    pub(crate) feed: Rc<ChangeFeed>,
    pub(crate) link: RefCell<Option<Rc<LinkDriver>>>,
    /// `getToken`, asked when there is no token or the ticket is refused.
    pub(crate) tokens: JsTokens,
}

impl LiveParts {
    /// `options` and the server URL when the client is to stay connected.
    pub(crate) fn new(options: Option<(LiveOptions, String)>, tokens: JsTokens) -> Self {
        let supported = crate::platform::event_source::supported();
        Self {
            options: options.filter(|_| supported),
            feed: Rc::new(ChangeFeed::default()),
            link: RefCell::new(None),
            tokens,
        }
    }

    /// The replicator's record store, observed by the change feed.
    pub(crate) fn observe(&self, store: Rc<IdbStore>) -> ObservedRecords {
        ObservedRecords::new(store, self.feed.clone())
    }
}

/// Once the client is open: joins the database's channel and, with live
/// on, lines up for the connection.
pub(crate) fn start(inner: &Rc<Inner>) {
    inner.live.feed.attach(inner);
    if let Some((options, server_url)) = inner.live.options.clone() {
        let driver = LinkDriver::start(inner, options, server_url);
        *inner.live.link.borrow_mut() = Some(driver);
    }
}

/// On `close()`: disconnects, hands the connection to another tab, ends
/// the subscriptions.
pub(crate) fn stop(inner: &Inner) {
    if let Some(driver) = inner.live.link.borrow_mut().take() {
        driver.stop();
    }
    inner.live.feed.detach();
}

/// On `setToken()`: a connection refused for its credentials retries now.
pub(crate) fn token_changed(inner: &Inner) {
    let driver = inner.live.link.borrow().clone();
    if let Some(driver) = driver {
        driver.token_changed();
    }
}

#[wasm_bindgen]
impl SyncClient {
    /// `{state, leader, retryAt}`: `state` is `"off"` (live is off),
    /// `"connecting"`, `"open"` or `"closed"` (waiting to reconnect);
    /// `leader` says whether this client holds the database's connection
    /// (otherwise the state is the holder's, as it last announced it).
    #[wasm_bindgen(js_name = getLiveStatus, unchecked_return_type = "LiveStatus")]
    pub fn get_live_status(&self) -> Result<JsValue, JsValue> {
        crate::api::guard::check()?;
        let driver = self.inner.live.link.borrow().clone();
        let status = match driver {
            Some(driver) => driver.status(),
            None => Status {
                state: "off",
                leader: false,
                retry_at: None,
            },
        };
        to_js_value(&status)
    }
}
