//! An object store that holds back what is written to it until the run commits, so that DataFusion's writers can
//! stream a file straight into object storage (its parts upload while the file is being written) and the object
//! still appears only if the whole run succeeds: a multipart upload is left open, not completed, until
//! [`DeferredUpload::commit`]; a small file written in one PUT is kept in memory until then. [`DeferredUpload::abort`] aborts every
//! upload begun, finished by its writer or not, so nothing becomes visible and none is left open. Reads, listings
//! and deletes go to the store underneath.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};

/// An upload while a writer has it, then while it waits for the run's commit; `None` once aborted.
type OpenUpload = Arc<Mutex<Option<Box<dyn MultipartUpload>>>>;

/// What writers started: an upload is registered when it begins, so that an abort reaches it even if its writer
/// failed before finishing it.
enum Finished {
    Put(Path, PutPayload, PutOptions),
    Upload(OpenUpload),
}

pub struct DeferredUpload {
    inner: Arc<dyn ObjectStore>,
    finished: Arc<Mutex<Vec<Finished>>>,
    failure: Failure,
}

/// The first error an upload's part met, kept because DataFusion's CSV and JSON writers replace it with a message
/// of their own ("Error encountered while finalizing writes!").
type Failure = Arc<Mutex<Option<String>>>;

impl DeferredUpload {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, finished: Arc::default(), failure: Failure::default() }
    }

    /// Why an upload failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("upload failure lock").clone()
    }

    /// Whether no writer wrote anything.
    pub fn is_empty(&self) -> bool {
        self.finished.lock().expect("held writes lock").is_empty()
    }

    /// Makes every held object visible: completes the uploads and sends the held PUTs.
    pub async fn commit(&self) -> object_store::Result<()> {
        let finished = std::mem::take(&mut *self.finished.lock().expect("held writes lock"));
        for write in finished {
            match write {
                Finished::Put(path, payload, opts) => {
                    self.inner.put_opts(&path, payload, opts).await?;
                }
                Finished::Upload(open) => {
                    let upload = open.lock().expect("upload lock").take();
                    if let Some(mut upload) = upload {
                        upload.complete().await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops every held object: the uploads are aborted, so none becomes visible.
    pub async fn abort(&self) {
        let finished = std::mem::take(&mut *self.finished.lock().expect("held writes lock"));
        for write in finished {
            if let Finished::Upload(open) = write {
                let upload = open.lock().expect("upload lock").take();
                if let Some(mut upload) = upload {
                    let _ = upload.abort().await;
                }
            }
        }
    }
}

impl fmt::Display for DeferredUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "held writes to {}", self.inner)
    }
}

impl fmt::Debug for DeferredUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeferredUpload({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for DeferredUpload {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.finished.lock().expect("held writes lock").push(Finished::Put(location.clone(), payload, opts));
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload: OpenUpload = Arc::new(Mutex::new(Some(self.inner.put_multipart_opts(location, opts).await?)));
        self.finished.lock().expect("held writes lock").push(Finished::Upload(upload.clone()));
        Ok(Box::new(HeldUpload { upload, failure: self.failure.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose parts go up as they come, and whose completion waits for [`DeferredUpload::commit`].
#[derive(Debug)]
struct HeldUpload {
    upload: OpenUpload,
    failure: Failure,
}

#[async_trait]
impl MultipartUpload for HeldUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = match self.upload.lock().expect("upload lock").as_mut() {
            Some(upload) => upload.put_part(data),
            None => {
                return Box::pin(async {
                    Err(object_store::Error::Generic { store: "held", source: "the upload was aborted".into() })
                });
            }
        };
        let failure = self.failure.clone();
        Box::pin(async move {
            let sent = part.await;
            if let Err(e) = &sent {
                failure.lock().expect("upload failure lock").get_or_insert_with(|| super::remote::with_causes(e));
            }
            sent
        })
    }

    /// Leaves the upload open: [`DeferredUpload::commit`] completes it.
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let upload = self.upload.lock().expect("upload lock").take();
        match upload {
            Some(mut upload) => upload.abort().await,
            None => Ok(()),
        }
    }
}
