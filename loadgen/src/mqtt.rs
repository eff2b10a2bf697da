//! A minimal blocking MQTT 3.1.1 client for the load generator's application side, on the
//! same `mqttbytes` codec the gateway's uplink uses.
//!
//! Latency is what the load generator measures, so the socket has `TCP_NODELAY` set: a
//! command published at a steady 10k/s must not wait behind Nagle's algorithm for the
//! broker's delayed ACK (tens of milliseconds on Linux), which would be charged to the
//! gateway. General-purpose clients do not expose that option. Everything is QoS 0: the
//! broker is on the same host and losses are counted, not retried.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, Connect, Packet, PingReq, Publish, Subscribe, SubscribeFilter};
use rumqttc::mqttbytes::{self, QoS};

/// Largest packet accepted from the broker; notifications and read responses are far smaller.
const MAX_PACKET: usize = 1 << 20;
/// Keep-alive announced in CONNECT; a PINGREQ goes out at half of it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a blocking read waits, so the reader notices `stop` and keep-alive deadlines.
const READ_TICK: Duration = Duration::from_millis(50);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What the reader hands to its caller.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// The broker acknowledged the subscription.
    Subscribed,
    /// A message on a subscribed topic.
    Publish {
        /// Its topic.
        topic: &'a str,
        /// Its payload.
        payload: &'a [u8],
    },
}

/// The writing half: publishes (from any thread) and keep-alive pings.
#[derive(Debug)]
pub struct Publisher {
    stream: Mutex<(TcpStream, BytesMut)>,
}

impl Publisher {
    /// Publishes `payload` on `topic` at QoS 0.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        let publish = Publish::new(topic, QoS::AtMostOnce, payload);
        self.send(|buf| publish.write(buf))
    }

    fn send(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
    ) -> anyhow::Result<()> {
        let mut guard = self
            .stream
            .lock()
            .map_err(|_| anyhow::anyhow!("MQTT writer poisoned"))?;
        let (stream, buf) = &mut *guard;
        buf.clear();
        encode(buf).map_err(|e| anyhow::anyhow!("encoding an MQTT packet: {e:?}"))?;
        stream.write_all(buf).context("writing to the MQTT broker")
    }

    /// Sends DISCONNECT and closes both halves.
    pub fn disconnect(&self) {
        let _ = self.send(|buf| v4::Disconnect.write(buf));
        if let Ok(guard) = self.stream.lock() {
            let _ = guard.0.shutdown(Shutdown::Both);
        }
    }
}

/// The reading half, driven by one thread.
#[derive(Debug)]
pub struct Reader {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// What one `read` fills; reused so a read costs no zeroing.
    scratch: Box<[u8]>,
    next_ping: Instant,
}

impl Reader {
    /// Reads what arrives within `READ_TICK` and hands every packet of interest to `on`,
    /// pinging when keep-alive is due.
    pub fn poll(
        &mut self,
        publisher: &Publisher,
        mut on: impl FnMut(Incoming<'_>),
    ) -> anyhow::Result<()> {
        if Instant::now() >= self.next_ping {
            publisher.send(|buf| PingReq.write(buf))?;
            self.next_ping = Instant::now() + KEEP_ALIVE / 2;
        }
        let n = match self.stream.read(&mut self.scratch) {
            Ok(0) => bail!("the MQTT broker closed the connection"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => return Err(e).context("reading from the MQTT broker"),
        };
        self.buf.extend_from_slice(&self.scratch[..n]);
        loop {
            match v4::read(&mut self.buf, MAX_PACKET) {
                Ok(Packet::Publish(p)) => on(Incoming::Publish {
                    topic: &p.topic,
                    payload: &p.payload,
                }),
                Ok(Packet::SubAck(_)) => on(Incoming::Subscribed),
                Ok(_) => {}
                Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(e) => bail!("malformed packet from the MQTT broker: {e:?}"),
            }
        }
    }
}

/// Connects to `broker` as `client_id` and subscribes to `filters` at QoS 0 (in one
/// SUBSCRIBE); the subscription acknowledgement arrives through [`Reader::poll`].
pub fn connect(
    broker: SocketAddr,
    client_id: &str,
    filters: &[String],
    timeout: Duration,
) -> anyhow::Result<(Publisher, Reader)> {
    let mut stream = TcpStream::connect_timeout(&broker, timeout)
        .with_context(|| format!("connecting to the MQTT broker at {broker}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut connect = Connect::new(client_id);
    connect.keep_alive = KEEP_ALIVE.as_secs() as u16;
    connect.clean_session = true;
    connect
        .write(&mut buf)
        .map_err(|e| anyhow::anyhow!("encoding CONNECT: {e:?}"))?;
    stream.write_all(&buf).context("sending CONNECT")?;
    buf.clear();
    stream
        .set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    let deadline = Instant::now() + timeout;
    let connack = loop {
        match v4::read(&mut buf, MAX_PACKET) {
            Ok(packet) => break packet,
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => bail!("malformed CONNACK from {broker}: {e:?}"),
        }
        if Instant::now() >= deadline {
            bail!("no CONNACK from {broker} within {timeout:?}");
        }
        let mut chunk = [0u8; 256];
        match stream.read(&mut chunk) {
            Ok(0) => bail!("{broker} closed the connection before CONNACK"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e).with_context(|| format!("waiting for CONNACK from {broker}")),
        }
    };
    match connack {
        Packet::ConnAck(ack) if ack.code == v4::ConnectReturnCode::Success => {}
        Packet::ConnAck(ack) => bail!("{broker} refused the connection: {:?}", ack.code),
        other => bail!("expected CONNACK from {broker}, got {other:?}"),
    }
    stream
        .set_read_timeout(Some(READ_TICK))
        .context("setting a read timeout")?;
    let writer = stream.try_clone().context("cloning the MQTT socket")?;
    let publisher = Publisher {
        stream: Mutex::new((writer, BytesMut::with_capacity(1024))),
    };
    let mut subscribe = Subscribe::new_many(
        filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce)),
    );
    // SUBSCRIBE needs a non-zero packet identifier (MQTT 3.1.1 §2.3.1).
    subscribe.pkid = 1;
    publisher.send(|b| subscribe.write(b))?;
    let reader = Reader {
        stream,
        buf,
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        next_ping: Instant::now() + KEEP_ALIVE / 2,
    };
    Ok((publisher, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribes, publishes to itself through the gateway's embedded broker, and reads
    /// the message back: the whole client against a real broker.
    #[test]
    fn round_trip_through_a_broker() {
        let broker = lwm2m_gateway::uplink::start_embedded("127.0.0.1:0".parse().expect("address"))
            .expect("embedded broker starts");
        let (publisher, mut reader) = connect(
            broker.local_addr(),
            "loadgen-mqtt-test",
            &["lg-test/+/up/#".to_owned()],
            Duration::from_secs(5),
        )
        .expect("connects");
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut subscribed, mut got) = (false, Vec::new());
        while got.is_empty() && Instant::now() < deadline {
            reader
                .poll(&publisher, |m| match m {
                    Incoming::Subscribed => subscribed = true,
                    Incoming::Publish { topic, payload } => {
                        got.push((topic.to_owned(), payload.to_vec()))
                    }
                })
                .expect("reads");
            if subscribed {
                publisher
                    .publish("lg-test/ep-1/up/notify", b"{\"x\":1}")
                    .expect("publishes");
            }
        }
        assert!(subscribed, "SUBACK seen");
        assert_eq!(
            got[0],
            ("lg-test/ep-1/up/notify".into(), b"{\"x\":1}".to_vec())
        );
        publisher.disconnect();
    }
}
