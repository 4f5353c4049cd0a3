//! The files of Iceberg tables, for iceberg-rust: local paths through its own local storage, object storage
//! (`s3://`, `az://`, `gs://`) through the same object stores and connection as Weir's file steps, so an Iceberg
//! table on a bucket needs no second set of credentials in the catalog.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage, OutputFile, Storage, StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use weir_engine::ResolvedConnection;

use crate::object_store::remote;

/// What iceberg-rust opens a table's files with: [`Files`] for every path.
///
/// iceberg-rust requires storages to be serializable (for engines that ship them to other processes); Weir never
/// does, so the connection is not serialized and a deserialized factory has none (the environment's credentials).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilesFactory {
    #[serde(skip)]
    connection: Option<ResolvedConnection>,
}

impl FilesFactory {
    /// Files on object storage go through `connection` (the step's), or the environment's credentials.
    pub fn new(connection: Option<ResolvedConnection>) -> Self {
        Self { connection }
    }
}

#[typetag::serde]
impl StorageFactory for FilesFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(Files { connection: self.connection.clone(), stores: Default::default() }))
    }
}

/// Paths of any scheme Weir speaks: local ones by iceberg-rust's local storage, the rest by the bucket's store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Files {
    #[serde(skip)]
    connection: Option<ResolvedConnection>,
    /// One store per bucket, opened on first use; shared by the files opened through this storage.
    #[serde(skip)]
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

/// Where a path is: on local disk, or an object in a bucket's store.
enum Place {
    Local,
    Object(Arc<dyn ObjectStore>, Path),
}

fn error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unexpected, format!("{path}: {e}"))
}

impl Files {
    fn place(&self, path: &str) -> iceberg::Result<Place> {
        if !remote::is_remote(path) {
            return Ok(Place::Local);
        }
        let url = Url::parse(path).map_err(|e| error(path, e))?;
        let bucket = format!("{}://{}", url.scheme(), url.authority());
        let mut stores = self.stores.lock().expect("no panic holds the store map");
        let store = match stores.get(&bucket) {
            Some(store) => store.clone(),
            None => {
                let store = remote::store_for(&url, self.connection.as_ref()).map_err(|e| error(path, e))?;
                stores.insert(bucket, store.clone());
                store
            }
        };
        let key = Path::from_url_path(url.path()).map_err(|e| error(path, e))?;
        Ok(Place::Object(store, key))
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for Files {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.exists(path).await,
            Place::Object(store, key) => match store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(error(path, e)),
            },
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.metadata(path).await,
            Place::Object(store, key) => {
                let meta = store.head(&key).await.map_err(|e| error(path, e))?;
                Ok(FileMetadata { size: meta.size })
            }
        }
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.read(path).await,
            Place::Object(store, key) => {
                let got = store.get(&key).await.map_err(|e| error(path, e))?;
                got.bytes().await.map_err(|e| error(path, e))
            }
        }
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.reader(path).await,
            Place::Object(store, key) => Ok(Box::new(ObjectRead { store, key, path: path.to_string() })),
        }
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.write(path, bs).await,
            Place::Object(store, key) => {
                store.put(&key, PutPayload::from(bs)).await.map_err(|e| error(path, e))?;
                Ok(())
            }
        }
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.writer(path).await,
            Place::Object(store, key) => {
                let upload = store.put_multipart(&key).await.map_err(|e| error(path, e))?;
                Ok(Box::new(ObjectWrite { upload: Some(WriteMultipart::new(upload)), path: path.to_string() }))
            }
        }
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.delete(path).await,
            Place::Object(store, key) => match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(error(path, e)),
            },
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.delete_prefix(path).await,
            Place::Object(store, key) => {
                let listed = store.list(Some(&key)).map_ok(|meta| meta.location).boxed();
                store.delete_stream(listed).try_collect::<Vec<_>>().await.map_err(|e| error(path, e))?;
                Ok(())
            }
        }
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Byte ranges of one object.
struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    key: Path,
    path: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store.get_range(&self.key, range).await.map_err(|e| error(&self.path, e))
    }
}

/// One object written in parts, visible once closed.
struct ObjectWrite {
    upload: Option<WriteMultipart>,
    path: String,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let upload = self.upload.as_mut().ok_or_else(|| error(&self.path, "written after close"))?;
        upload.wait_for_capacity(8).await.map_err(|e| error(&self.path, e))?;
        upload.write(&bs);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let upload = self.upload.take().ok_or_else(|| error(&self.path, "closed twice"))?;
        upload.finish().await.map_err(|e| error(&self.path, e))?;
        Ok(())
    }
}
