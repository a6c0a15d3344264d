//! A real S3 API server for the tests: `moto_server` (PyPI `moto[server]`, installed by
//! setup.sh into `integration/.venv-moto`) on 127.0.0.1, with one bucket made for the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{repo_root, require_peer};

pub struct MotoServer {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

impl MotoServer {
    /// Starts moto_server on a free port and makes `bucket`. `None` outside CI when moto is
    /// not installed (setup.sh installs it); in CI a missing moto fails the test.
    pub fn start(bucket: &str) -> Option<MotoServer> {
        let binary = require_peer(
            repo_root().join("integration/.venv-moto/bin/moto_server"),
            "moto_server",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let agent = crate::process::http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if agent.get(&format!("{endpoint}/moto-api/")).call().is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "moto_server did not start in 30s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // CreateBucket: a PUT on the bucket's path (path-style, unsigned: moto accepts it).
        let made = agent
            .put(&format!("{endpoint}/{bucket}"))
            .send(&[][..])
            .expect("create bucket");
        assert!(made.status().is_success(), "create bucket: {}", made.status());
        Some(MotoServer {
            endpoint,
            bucket: bucket.to_string(),
            child,
        })
    }

    /// A `storage` entry of pipeline.yaml for the bucket, indented for `storage:`.
    pub fn storage_yaml(&self, id: &str) -> String {
        format!(
            "  {id}:\n    url: s3://{bucket}\n    options:\n      endpoint: {endpoint}\n      region: us-east-1\n      \
             access_key_id: test\n      secret_access_key: test\n      allow_http: \"true\"\n",
            bucket = self.bucket,
            endpoint = self.endpoint,
        )
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
