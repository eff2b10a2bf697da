//! The API's side of the control channels: asking one shard or all of them, always with a
//! timeout, and paging a listing across shards.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::oneshot;

use super::ApiError;
use crate::runtime::control::{ClientPage, CommandTaken, Control, ShardSnapshot};
use crate::session::{ClientCursor, ClientFilter, ClientInfo};

/// How long a shard may take to answer a request before the API gives up on it (503). A
/// filtered count over a million endpoints takes well under a second.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Listing positions remembered so that the next page resumes in O(limit) instead of
/// passing over every client before it: a few per concurrent pager.
const CURSOR_CACHE: usize = 256;

/// Where a page of a listing ends: a filter, a shard and an offset into its matching
/// clients, and the shard's position for that offset.
#[derive(Debug, Clone)]
struct CachedCursor {
    filter: ClientFilter,
    shard: usize,
    offset: usize,
    cursor: ClientCursor,
}

/// The shards' control senders.
#[derive(Debug)]
pub(super) struct Shards {
    senders: Vec<flume::Sender<Control>>,
    cursors: Mutex<VecDeque<CachedCursor>>,
}

/// A page of a listing across shards.
#[derive(Debug)]
pub(super) struct Listing {
    /// The clients of the page.
    pub items: Vec<ClientInfo>,
    /// Clients matching the filter on every shard.
    pub total: usize,
}

impl Shards {
    pub(super) fn new(senders: Vec<flume::Sender<Control>>) -> Shards {
        Shards {
            senders,
            cursors: Mutex::new(VecDeque::new()),
        }
    }

    /// Number of shards.
    pub(super) fn len(&self) -> usize {
        self.senders.len()
    }

    /// Sends a request to `shard` and waits for its answer.
    async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, ApiError> {
        let rx = self.send(shard, make).await?;
        Self::answer(shard, rx).await
    }

    async fn send<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<oneshot::Receiver<T>, ApiError> {
        let stopped = || ApiError::Unavailable(format!("shard {shard} is not running"));
        let sender = self.senders.get(shard).ok_or_else(stopped)?;
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout(SHARD_TIMEOUT, sender.send_async(make(tx))).await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(ApiError::Unavailable(format!(
                "shard {shard} did not take the request within {SHARD_TIMEOUT:?}"
            ))),
        }
    }

    async fn answer<T>(shard: usize, rx: oneshot::Receiver<T>) -> Result<T, ApiError> {
        match tokio::time::timeout(SHARD_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ApiError::Unavailable(format!(
                "shard {shard} is not running"
            ))),
            Err(_) => Err(ApiError::Unavailable(format!(
                "shard {shard} did not answer within {SHARD_TIMEOUT:?}"
            ))),
        }
    }

    /// Sends the same request to every shard at once, then collects the answers in order.
    async fn ask_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> Control,
    ) -> Result<Vec<T>, ApiError> {
        let mut pending = Vec::with_capacity(self.senders.len());
        for shard in 0..self.senders.len() {
            pending.push(self.send(shard, &make).await?);
        }
        let mut out = Vec::with_capacity(pending.len());
        for (shard, rx) in pending.into_iter().enumerate() {
            out.push(Self::answer(shard, rx).await?);
        }
        Ok(out)
    }

    /// Every shard's counters.
    pub(super) async fn snapshots(&self) -> Result<Vec<ShardSnapshot>, ApiError> {
        self.ask_all(Control::Snapshot).await
    }

    /// The client registered under `ep`, from whichever shard holds it.
    pub(super) async fn client(&self, ep: &str) -> Result<Option<ClientInfo>, ApiError> {
        let found = self
            .ask_all(|reply| Control::Client {
                ep: ep.to_owned(),
                reply,
            })
            .await?;
        Ok(found.into_iter().flatten().next())
    }

    /// Deregisters `ep`; `false` when no shard holds it.
    pub(super) async fn deregister(&self, ep: &str) -> Result<bool, ApiError> {
        let held = self
            .ask_all(|reply| Control::Deregister {
                ep: ep.to_owned(),
                reply,
            })
            .await?;
        Ok(held.into_iter().any(|h| h))
    }

    /// Hands a command to the shard holding `ep`; `None` when no shard does.
    pub(super) async fn command(
        &self,
        ep: &str,
        payload: &[u8],
        wait: bool,
    ) -> Result<Option<Option<oneshot::Receiver<Vec<u8>>>>, ApiError> {
        for shard in 0..self.senders.len() {
            let taken = self
                .ask(shard, |reply| Control::Command {
                    ep: ep.to_owned(),
                    payload: payload.to_vec(),
                    wait,
                    reply,
                })
                .await?;
            match taken {
                CommandTaken::NotHere => continue,
                CommandTaken::Taken(rx) => return Ok(Some(rx)),
                CommandTaken::Busy => {
                    return Err(ApiError::Unavailable(
                        "too many API commands are waiting for their devices".into(),
                    ))
                }
            }
        }
        Ok(None)
    }

    /// Page `page` (1-based) of `limit` clients matching `filter`, in shard order, with the
    /// total count.
    pub(super) async fn list(
        &self,
        filter: ClientFilter,
        page: usize,
        limit: usize,
    ) -> Result<Listing, ApiError> {
        // An exact name is one lookup, not a scan.
        if let Some(ep) = &filter.endpoint_name {
            let found = self.client(ep).await?.filter(|c| {
                filter.like.as_deref().is_none_or(|l| ep.contains(l))
                    && filter.security.is_none_or(|s| s.as_str() == c.security)
                    && filter.queue_mode.is_none_or(|q| q == c.queue_mode)
            });
            let total = usize::from(found.is_some());
            let items = found
                .map(|mut c| {
                    c.params = None;
                    c.object_list = None;
                    c.observations = None;
                    c.queued_commands = None;
                    c.command_in_flight = None;
                    c
                })
                .into_iter()
                .filter(|_| page == 1)
                .collect();
            return Ok(Listing { items, total });
        }
        let filter = Arc::new(filter);
        let counts = self
            .ask_all(|reply| Control::Count {
                filter: filter.clone(),
                reply,
            })
            .await?;
        let total = counts.iter().sum();
        let mut offset = page.saturating_sub(1).saturating_mul(limit);
        let mut items = Vec::with_capacity(limit.min(1024));
        for (shard, count) in counts.into_iter().enumerate() {
            if items.len() >= limit {
                break;
            }
            if offset >= count {
                offset -= count;
                continue;
            }
            let cursor = self.cached(&filter, shard, offset).unwrap_or(ClientCursor {
                bucket: 0,
                skip: offset,
            });
            let want = limit - items.len();
            let ClientPage { items: got, next } = self
                .ask(shard, |reply| Control::List {
                    filter: filter.clone(),
                    cursor,
                    limit: want,
                    reply,
                })
                .await?;
            let end = offset + got.len();
            items.extend(got);
            if let Some(next) = next {
                self.remember(&filter, shard, end, next);
            }
            offset = 0;
        }
        Ok(Listing { items, total })
    }

    fn cached(&self, filter: &ClientFilter, shard: usize, offset: usize) -> Option<ClientCursor> {
        let cursors = self.cursors.lock().ok()?;
        cursors
            .iter()
            .find(|c| c.shard == shard && c.offset == offset && c.filter == *filter)
            .map(|c| c.cursor)
    }

    fn remember(&self, filter: &ClientFilter, shard: usize, offset: usize, cursor: ClientCursor) {
        let Ok(mut cursors) = self.cursors.lock() else {
            return;
        };
        if cursors.len() >= CURSOR_CACHE {
            cursors.pop_front();
        }
        cursors.push_back(CachedCursor {
            filter: filter.clone(),
            shard,
            offset,
            cursor,
        });
    }
}
