//! The SQS broker: Amazon SQS or a compatible server, with the visibility timeout as receipt.
//!
//! A received message is invisible to other consumers until its visibility
//! timeout passes, then delivered again: that is the receipt. It starts at
//! `retry`, is raised at once to the task's timeout plus `receipt_margin` when
//! that is longer, and the cluster extends it while the task runs. SQS counts
//! receives itself (`ApproximateReceiveCount`), which is the delivery count for
//! `max_attempts`.
//!
//! The package travels in a binary message attribute rather than the body:
//! a body must be text, and base64 would make it a third larger, while
//! binary attributes count toward SQS's size limit by their raw length.
//!
//! SQS cannot hand a message back without counting the receive, so `release`
//! sends a copy that carries the deliveries so far (`q8s-deliveries`) and
//! deletes the original: a cluster stopping with tasks it never started does
//! not use up their `max_attempts`.

/// The SDK, for callers that need SQS itself (the tests tamper with messages through it).
pub use aws_sdk_sqs;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use tokio::sync::Mutex;

use super::{Broker, BrokerError, BrokerInfo, Delivery, Leases, Receipt};
use crate::config::Config;
use crate::package::Package;

/// SQS's limit on a message: body and attributes, names and types included.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// SQS's limit on entries per batch call and messages per receive.
const MAX_BATCH: usize = 10;
/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// SQS's longest long poll.
const MAX_WAIT_SECONDS: i32 = 20;

const PACKAGE: &str = "q8s-package";
const TIMEOUT: &str = "q8s-timeout";
const DELIVERIES: &str = "q8s-deliveries";
/// Bodies are required and must not be empty; the package is in an attribute.
const BODY: &str = "q8s";

/// Where the queue is and how to reach it: from the broker URL and the seed's `sqs` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSettings {
    /// The queue's name (created if missing) or its URL.
    pub queue: QueueRef,
    /// The AWS region; else the SDK's usual chain (AWS_REGION, profile).
    pub region: Option<String>,
    /// An access key id and secret; else the SDK's usual chain.
    pub credentials: Option<(String, String)>,
    /// An SQS-compatible server instead of AWS.
    pub endpoint: Option<String>,
}

/// A queue by name or by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// `sqs://NAME`: looked up, and created if missing.
    Name(String),
    /// `https://…/ACCOUNT/NAME`: used as it is.
    Url(String),
}

impl SqsSettings {
    /// The settings `config` gives: `broker` names the queue, the `sqs` table the rest.
    pub fn from_config(config: &Config) -> Result<SqsSettings, BrokerError> {
        let queue = queue_ref(&config.broker, &config.name)?;
        let mut settings = SqsSettings {
            queue,
            region: None,
            credentials: None,
            endpoint: None,
        };
        let Some(table) = &config.sqs else {
            return Ok(settings);
        };
        let Some(table) = table.as_table() else {
            return Err(BrokerError::Config(
                "option `sqs` must be a table, e.g. sqs = { aws_region = \"us-east-1\" }".into(),
            ));
        };
        let mut key_id = None;
        let mut secret = None;
        for (key, value) in table {
            let Some(text) = value.as_str() else {
                return Err(BrokerError::Config(format!(
                    "sqs.{key} must be a string, got {value}"
                )));
            };
            let text = Some(text.to_string());
            match key.as_str() {
                "aws_region" => settings.region = text,
                "aws_access_key_id" => key_id = text,
                "aws_secret_access_key" => secret = text,
                "endpoint_url" => settings.endpoint = text,
                _ => {
                    return Err(BrokerError::Config(format!(
                        "sqs.{key} is not an SQS setting; use aws_region, aws_access_key_id, \
                         aws_secret_access_key or endpoint_url"
                    )));
                }
            }
        }
        settings.credentials = match (key_id, secret) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) => None,
            _ => {
                return Err(BrokerError::Config(
                    "sqs: give both aws_access_key_id and aws_secret_access_key, or neither \
                     (to use the SDK's usual chain)"
                        .into(),
                ));
            }
        };
        if settings.endpoint.is_none()
            && let QueueRef::Url(url) = &settings.queue
            && !url.contains(".amazonaws.com")
        {
            // A queue URL on a compatible server is also where to send requests.
            settings.endpoint = Some(origin(url));
        }
        Ok(settings)
    }
}

/// The queue `broker` names; `sqs://` alone names it after the cluster, as the seed did.
fn queue_ref(broker: &str, cluster: &str) -> Result<QueueRef, BrokerError> {
    if let Some(name) = broker.strip_prefix("sqs://") {
        let name = match name.trim_end_matches('/') {
            "" => cluster,
            name => name,
        };
        let valid = !name.is_empty()
            && name.len() <= 80
            && name
                .strip_suffix(".fifo")
                .unwrap_or(name)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(BrokerError::Config(format!(
                "{broker:?} does not name an SQS queue: use sqs://NAME, where NAME has 1 to 80 \
                 letters, digits, - or _ (and may end in .fifo), or the queue's https:// URL"
            )));
        }
        return Ok(QueueRef::Name(name.to_string()));
    }
    if broker.starts_with("https://") || broker.starts_with("http://") {
        return Ok(QueueRef::Url(broker.to_string()));
    }
    Err(BrokerError::Config(format!(
        "{broker:?} is not an SQS queue: use sqs://NAME or the queue's https:// URL"
    )))
}

/// `http://host:port` of a URL.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

fn sqs_error(error: impl std::error::Error) -> BrokerError {
    // The SDK's Display says only "service error"; the source chain says which.
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    BrokerError::Sqs(message)
}

/// A delivery the broker handed out, kept so `release` can send it again.
///
/// Kept only while its visibility timeout runs: once SQS shows the message
/// again, the delivery is over whether or not anyone said so (a failure left
/// for redelivery, a worker that died), and a copy sent by `release` then
/// would run the task twice.
#[derive(Debug, Clone)]
struct Out {
    package: Package,
    timeout: Option<u64>,
    attempt: u32,
    visible_again: std::time::Instant,
}

/// The SQS broker for one queue.
#[derive(Debug)]
pub struct SqsBroker {
    client: Client,
    queue_url: String,
    fifo: bool,
    group: String,
    leases: Leases,
    wait_seconds: i32,
    out: Mutex<HashMap<String, Out>>,
}

impl SqsBroker {
    /// Connects with `settings`, finding (or creating) the queue; `poll` sets the long-poll wait.
    pub async fn connect(
        settings: &SqsSettings,
        cluster: &str,
        leases: Leases,
        poll: Duration,
    ) -> Result<SqsBroker, BrokerError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "q8s configuration",
            ));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(BrokerError::Config(
                "SQS needs a region: set sqs = { aws_region = \"…\" } or AWS_REGION".into(),
            ));
        }
        let client = Client::new(&sdk);
        let queue_url = match &settings.queue {
            QueueRef::Url(url) => url.clone(),
            QueueRef::Name(name) => find_or_create(&client, name).await.map_err(|error| {
                let server = settings.endpoint.as_deref().unwrap_or("AWS");
                let error = match error {
                    BrokerError::Sqs(message) => message,
                    other => other.to_string(),
                };
                BrokerError::Sqs(format!(
                    "cannot find or create queue {name} on {server}: {error}; check the region, \
                     the credentials (sqs = {{ aws_access_key_id, aws_secret_access_key }} or the \
                     SDK's chain) and endpoint_url"
                ))
            })?,
        };
        let fifo = queue_url.ends_with(".fifo");
        let wait_seconds = (poll.as_secs_f64().ceil() as i32).clamp(1, MAX_WAIT_SECONDS);
        Ok(SqsBroker {
            client,
            queue_url,
            fifo,
            group: cluster.to_string(),
            leases,
            wait_seconds,
            out: Mutex::new(HashMap::new()),
        })
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Deliveries kept for `release`: those whose visibility timeout still runs.
    #[doc(hidden)]
    pub async fn deliveries_kept(&self) -> usize {
        let now = std::time::Instant::now();
        let mut out = self.out.lock().await;
        out.retain(|_, kept| kept.visible_again > now);
        out.len()
    }

    /// The SDK client, for what the broker does not offer (the tests tamper with messages).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The message attributes that carry a package, and the message's size as SQS
    /// counts it; an error for a message over SQS's limit.
    fn attributes(
        &self,
        package: &Package,
        timeout: Option<u64>,
        deliveries: u32,
    ) -> Result<(HashMap<String, MessageAttributeValue>, usize), BrokerError> {
        let size = BODY.len() + PACKAGE.len() + "Binary".len() + package.len();
        let mut attributes = HashMap::new();
        attributes.insert(
            PACKAGE.to_string(),
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(package.as_bytes()))
                .build()
                .map_err(sqs_error)?,
        );
        let mut numbers = Vec::new();
        if let Some(timeout) = timeout {
            numbers.push((TIMEOUT, timeout.to_string()));
        }
        if deliveries > 0 {
            numbers.push((DELIVERIES, deliveries.to_string()));
        }
        let mut extra = 0;
        for (name, value) in numbers {
            extra += name.len() + "Number".len() + value.len();
            attributes.insert(
                name.to_string(),
                MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(value)
                    .build()
                    .map_err(sqs_error)?,
            );
        }
        if size + extra > MAX_MESSAGE_SIZE {
            return Err(BrokerError::TooLarge(format!(
                "the task package is {} bytes, {} bytes as an SQS message, over SQS's limit of \
                 {MAX_MESSAGE_SIZE} bytes; lower max_package_size to {} or pass large data by \
                 reference (a URL or a key) instead of in the arguments",
                package.len(),
                size + extra,
                MAX_MESSAGE_SIZE - (size + extra - package.len()),
            )));
        }
        Ok((attributes, size + extra))
    }

    /// One entry of a send batch; on a FIFO queue, in the cluster's message group.
    fn entry(
        &self,
        id: usize,
        attributes: HashMap<String, MessageAttributeValue>,
    ) -> Result<SendMessageBatchRequestEntry, BrokerError> {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(BODY)
            .set_message_attributes(Some(attributes));
        if self.fifo {
            entry = entry
                .message_group_id(&self.group)
                .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string());
        }
        entry.build().map_err(sqs_error)
    }

    /// Sends one package (a batch of one: every send takes the same path); returns its message id.
    async fn send(
        &self,
        package: &Package,
        timeout: Option<u64>,
        deliveries: u32,
    ) -> Result<String, BrokerError> {
        let (attributes, _) = self.attributes(package, timeout, deliveries)?;
        let ids = self.send_batch(vec![self.entry(0, attributes)?]).await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    /// Sends up to 10 entries; returns their message ids, or an error naming those refused.
    async fn send_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<Vec<String>, BrokerError> {
        let count = entries.len();
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_error)?;
        if let Some(failed) = sent.failed().first() {
            return Err(BrokerError::Sqs(format!(
                "{} of {count} packages were not queued, the first with {}: {}; the others were",
                sent.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            )));
        }
        Ok(sent
            .successful()
            .iter()
            .map(|entry| entry.message_id().to_string())
            .collect())
    }

    /// Turns a received message into a delivery; `None` for one that carries no package.
    fn delivery(&self, message: &Message) -> Option<(Delivery, Option<u64>)> {
        let handle = message.receipt_handle()?.to_string();
        let attributes = message.message_attributes();
        let number = |name: &str| {
            attributes
                .and_then(|a| a.get(name))
                .and_then(|value| value.string_value())
                .and_then(|text| text.parse::<u64>().ok())
        };
        let package = attributes
            .and_then(|a| a.get(PACKAGE))
            .and_then(|value| value.binary_value())
            .map(|blob| Package::from_bytes(blob.as_ref().to_vec()))
            // A message sent by something else: let verification reject it.
            .unwrap_or_else(|| {
                Package::from_bytes(message.body().unwrap_or_default().as_bytes().to_vec())
            });
        let received = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or(1);
        let before = number(DELIVERIES).unwrap_or(0) as u32;
        let delivery = Delivery {
            receipt: Receipt(handle),
            package,
            attempt: before.saturating_add(received),
        };
        Some((delivery, number(TIMEOUT)))
    }

    async fn set_visibility(&self, receipts: &[&str], lease: Duration) -> Result<(), BrokerError> {
        let seconds = lease.min(MAX_VISIBILITY).as_secs() as i32;
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .visibility_timeout(seconds)
                        .build()
                        .map_err(sqs_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Entries that fail belong to deliveries already superseded or gone:
            // those are not to be extended.
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
        }
        Ok(())
    }

    /// A count the queue keeps; a queue that no longer exists holds none.
    async fn attribute(&self, name: QueueAttributeName) -> Result<u64, BrokerError> {
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(name.clone())
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist()) =>
            {
                return Ok(0);
            }
            Err(error) => return Err(sqs_error(error)),
        };
        Ok(out
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

async fn find_or_create(client: &Client, name: &str) -> Result<String, BrokerError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(found) => return Ok(found.queue_url().unwrap_or_default().to_string()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) => {}
        Err(error) => return Err(sqs_error(error)),
    }
    let mut request = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let created = request.send().await.map_err(sqs_error)?;
    tracing::info!("created SQS queue {name}");
    Ok(created.queue_url().unwrap_or_default().to_string())
}

#[async_trait]
impl Broker for SqsBroker {
    async fn enqueue(
        &self,
        package: &Package,
        timeout: Option<u64>,
    ) -> Result<String, BrokerError> {
        self.send(package, timeout, 0).await
    }

    async fn enqueue_all(&self, packages: &[(Package, Option<u64>)]) -> Result<(), BrokerError> {
        // A batch is limited to 10 entries and to one message's size in all.
        // Every package is checked before any is sent, so a refusal queues none.
        let checked = packages
            .iter()
            .map(|(package, timeout)| self.attributes(package, *timeout, 0))
            .collect::<Result<Vec<_>, BrokerError>>()?;
        let mut batch: Vec<SendMessageBatchRequestEntry> = Vec::new();
        let mut batch_size = 0;
        let mut pending = checked.into_iter().peekable();
        while let Some((attributes, size)) = pending.next() {
            if !batch.is_empty() && batch_size + size > MAX_MESSAGE_SIZE {
                self.send_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch.push(self.entry(batch.len(), attributes)?);
            batch_size += size;
            if batch.len() == MAX_BATCH || pending.peek().is_none() {
                self.send_batch(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
        }
        Ok(())
    }

    async fn dequeue(&self, bulk: usize) -> Result<Vec<Delivery>, BrokerError> {
        let retry = self.leases.lease(None);
        // Visibility runs from the request, not from the answer that arrives later.
        let asked = std::time::Instant::now();
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(bulk.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(self.wait_seconds)
            .visibility_timeout(retry.min(MAX_VISIBILITY).as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sqs_error)?;
        let mut deliveries = Vec::new();
        let mut longer: HashMap<Duration, Vec<String>> = HashMap::new();
        let now = std::time::Instant::now();
        let mut out = self.out.lock().await;
        out.retain(|_, kept| kept.visible_again > now);
        for message in received.messages() {
            let Some((delivery, timeout)) = self.delivery(message) else {
                continue;
            };
            let lease = self.leases.lease(timeout);
            if lease > retry {
                longer
                    .entry(lease)
                    .or_default()
                    .push(delivery.receipt.0.clone());
            }
            out.insert(
                delivery.receipt.0.clone(),
                Out {
                    package: delivery.package.clone(),
                    timeout,
                    attempt: delivery.attempt,
                    visible_again: asked + lease.min(MAX_VISIBILITY),
                },
            );
            deliveries.push(delivery);
        }
        drop(out);
        for (lease, handles) in longer {
            let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
            self.set_visibility(&handles, lease).await?;
        }
        Ok(deliveries)
    }

    async fn acknowledge(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge_all(std::slice::from_ref(receipt)).await
    }

    async fn acknowledge_all(&self, receipts: &[Receipt]) -> Result<(), BrokerError> {
        // Every chunk is tried, so one refused delete does not leave the rest undeleted.
        let mut failures = Vec::new();
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&receipt.0)
                        .build()
                        .map_err(sqs_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let deleted = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            let mut out = self.out.lock().await;
            for receipt in chunk {
                out.remove(&receipt.0);
            }
            drop(out);
            failures.extend(deleted.failed().iter().map(|failed| {
                format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                )
            }));
        }
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(BrokerError::Sqs(format!(
                "{} of {} deletes failed, the first with {first}",
                failures.len(),
                receipts.len()
            ))),
        }
    }

    async fn wait_for_work(&self, _poll: Duration) {
        // `dequeue` long-polls, so an empty answer has already waited.
    }

    async fn fail(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge(receipt).await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.acknowledge(receipt).await
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        let out = self.out.lock().await.remove(&receipt.0);
        let Some(out) = out.filter(|out| out.visible_again > std::time::Instant::now()) else {
            // Not handed out here: all SQS can do is make it visible again.
            return self.set_visibility(&[&receipt.0], Duration::ZERO).await;
        };
        self.send(&out.package, out.timeout, out.attempt.saturating_sub(1))
            .await?;
        self.acknowledge(receipt).await
    }

    async fn requeue(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        // SQS counted the receive already; visible again now, it is received again at once.
        self.out.lock().await.remove(&receipt.0);
        self.set_visibility(&[&receipt.0], Duration::ZERO).await
    }

    async fn extend(&self, receipts: &[Receipt], lease: Duration) -> Result<(), BrokerError> {
        // Only deliveries still held here: one requeued or released meanwhile
        // must not be hidden again.
        let held: Vec<String> = {
            let out = self.out.lock().await;
            receipts
                .iter()
                .filter(|receipt| out.contains_key(&receipt.0))
                .map(|receipt| receipt.0.clone())
                .collect()
        };
        let handles: Vec<&str> = held.iter().map(String::as_str).collect();
        let visible_again = std::time::Instant::now() + lease.min(MAX_VISIBILITY);
        self.set_visibility(&handles, lease).await?;
        let mut out = self.out.lock().await;
        for handle in &held {
            if let Some(kept) = out.get_mut(handle) {
                kept.visible_again = visible_again;
            }
        }
        Ok(())
    }

    async fn purge_queue(&self) -> Result<u64, BrokerError> {
        let count = self.queue_size().await? + self.lock_size().await?;
        self.client
            .purge_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(sqs_error)?;
        self.out.lock().await.clear();
        Ok(count)
    }

    async fn delete_queue(&self) -> Result<(), BrokerError> {
        self.client
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    async fn queue_size(&self) -> Result<u64, BrokerError> {
        self.attribute(QueueAttributeName::ApproximateNumberOfMessages)
            .await
    }

    async fn lock_size(&self) -> Result<u64, BrokerError> {
        self.attribute(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    fn info(&self) -> BrokerInfo {
        BrokerInfo {
            name: "sqs".into(),
            location: self.queue_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_named_by_sqs_url_or_given_by_its_https_url() {
        assert_eq!(
            queue_ref("sqs://reports", "default").expect("name"),
            QueueRef::Name("reports".into())
        );
        assert_eq!(
            queue_ref("sqs://", "default").expect("the cluster's"),
            QueueRef::Name("default".into())
        );
        assert_eq!(
            queue_ref("sqs://orders.fifo", "default").expect("fifo name"),
            QueueRef::Name("orders.fifo".into())
        );
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/reports";
        assert_eq!(
            queue_ref(url, "default").expect("url"),
            QueueRef::Url(url.into())
        );
        let error = queue_ref("sqs://bad name", "default").expect_err("space");
        assert!(error.to_string().contains("sqs://NAME"), "{error}");
    }

    #[test]
    fn queue_url_on_a_compatible_server_is_also_its_endpoint() {
        assert_eq!(
            origin("http://127.0.0.1:4566/000000000000/q"),
            "http://127.0.0.1:4566"
        );
    }
}
