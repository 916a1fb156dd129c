//! The AMQP queue destination (design §6, §8): arrays published with
//! confirms through the run's one [`Publisher`], a progress record per
//! directory, directories marked once all is confirmed.

use std::path::Path;
use std::sync::Arc;

use super::dest::{Delivered, Destination, Drain, Undelivered};
use crate::config::RabbitConfig;
use crate::publish::{PublishError, PublishOptions, Publisher};
use crate::report::Reporter;
use crate::resume::{Plan, RecordFile};

/// Publishes to the configured queue.
pub struct QueueDestination {
    config: Box<RabbitConfig>,
    publish: PublishOptions,
    reporter: Arc<dyn Reporter>,
    /// The run's one connection, made on first use.
    publisher: Option<Publisher>,
}

impl QueueDestination {
    /// A destination for the broker of `config`; nothing is connected yet.
    pub fn new(
        config: RabbitConfig,
        publish: PublishOptions,
        reporter: Arc<dyn Reporter>,
    ) -> QueueDestination {
        QueueDestination {
            config: Box::new(config),
            publish,
            reporter,
            publisher: None,
        }
    }

    /// The run's connection, made on first use.
    async fn connected(&mut self) -> Result<&mut Publisher, PublishError> {
        if self.publisher.is_none() {
            self.publisher = Some(Publisher::connect(&self.config, &self.publish).await?);
        }
        Ok(self.publisher.as_mut().expect("connected above"))
    }
}

fn failed(source: PublishError) -> Undelivered {
    let unconfirmed = match &source {
        PublishError::Unconfirmed { pending, .. } => *pending,
        _ => 0,
    };
    if let PublishError::QueueVanished { since, .. } = source.root() {
        return Undelivered::Lost {
            since: *since,
            source: Box::new(source),
            unconfirmed,
        };
    }
    Undelivered::Failed {
        source: Box::new(source),
        unconfirmed,
    }
}

impl Destination for QueueDestination {
    fn keeps_record(&self) -> bool {
        true
    }

    /// Before resuming a directory with confirmed messages: connects, and
    /// if this run had to create the queue after the record was written,
    /// the messages it counts went into a queue that is gone (deleted, or
    /// lost by the broker between runs). The record is then rewound and the
    /// new plan ships the directory from its start under new ids.
    async fn prepare(
        &mut self,
        dir: &Path,
        plan: Plan,
        record: Option<&mut RecordFile>,
    ) -> Result<Plan, Box<dyn std::error::Error + Send + Sync>> {
        let Some(rec) = record else {
            return Ok(plan);
        };
        if !plan.resumes() {
            return Ok(plan);
        }
        let created = self.connected().await?.queue_created_at();
        let written = std::fs::metadata(rec.path())
            .and_then(|m| m.modified())
            .ok();
        match (created, written) {
            (Some(c), Some(w)) if w < c => {}
            _ => return Ok(plan),
        }
        self.reporter.warning(&format_args!(
            "{}: the queue did not exist and was created by this run, so the {} messages \
             confirmed into the old one are gone with it: shipping the directory again \
             from its start under new message ids",
            dir.display(),
            plan.skip
        ));
        rec.rewind().map_err(|source| PublishError::Progress {
            path: rec.path().to_path_buf(),
            source,
        })?;
        Ok(rec.rewound_plan())
    }

    async fn drain(&mut self, job: Drain<'_>) -> Result<Delivered, Undelivered> {
        let start = job.start();
        let publisher = self.connected().await.map_err(failed)?;
        let result = publisher
            .publish_stream(
                Some(job.id_prefix),
                start,
                job.recorder,
                job.input,
                job.shutdown,
            )
            .await;
        match result {
            Ok(report) => Ok(Delivered {
                messages: report.published,
                bytes: report.bytes,
            }),
            Err(PublishError::Interrupted { confirmed }) => {
                Err(Undelivered::Interrupted { confirmed })
            }
            Err(PublishError::Input { .. }) => Err(Undelivered::ProducerFailed),
            Err(source) => Err(failed(source)),
        }
    }

    async fn close(mut self) {
        if let Some(p) = self.publisher.take() {
            p.close().await;
        }
    }
}
