//! A real PostgreSQL server (Debian's `postgresql` package) for end-to-end tests.
//!
//! [`Postgres::start`] runs `initdb` into a fresh temp dir (trust auth, superuser `postgres`,
//! `--no-sync`) and starts `postgres` directly as a child process on 127.0.0.1 and a free port,
//! its Unix socket in the same temp dir, with `fsync=off`. It is ready when a client can
//! connect. The binaries are the highest version under `/usr/lib/postgresql/*/bin`, or else
//! found on `PATH`.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (here and in CI) both programs
//! run as the `postgres` user that the Debian package creates (through `setpriv`, or
//! `runuser` when `setpriv` is missing), and the temp dir is handed to that user.
//!
//! The server runs in its own process group; dropping [`Postgres`] stops it (immediate
//! shutdown, then SIGKILL to the group if it lingers) and removes the directory.
//! [`Postgres::stop`] and [`Postgres::start_server`] stop and restart it on the same port and
//! data, and [`Postgres::freeze`] / [`Postgres::thaw`] suspend it to play a hung server.
//! [`Postgres::require_passwords`] turns on password (SCRAM) authentication for every TCP login
//! but `postgres`'s, so a test can check a client's password handling.
//!
//! ```no_run
//! # async fn f() -> Result<(), vla_e2e::HarnessError> {
//! let pg = vla_e2e::postgres::Postgres::start().await?;
//! pg.execute("CREATE TABLE customers (customer_id text primary key, tier text not null)")
//!     .await?;
//! let _dsn = pg.dsn(); // host=127.0.0.1 port=N user=postgres dbname=postgres
//! # Ok(()) }
//! ```

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, find_binary, free_port};

const HOW: &str = "run scripts/test, which installs it, or `apt-get install -y postgresql`";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server in a temp dir; stopped and removed on drop.
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    data: PathBuf,
    log: PathBuf,
    server: Option<Child>,
    dir: tempfile::TempDir,
}

/// The user the server runs as when the tests run as root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
    setpriv: Option<PathBuf>,
}

impl RunAs {
    /// `program args...` as this user.
    fn command(&self, program: &Path) -> Command {
        match &self.setpriv {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.arg(format!("--reuid={}", self.uid))
                    .arg(format!("--regid={}", self.gid))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
            None => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            }
        }
    }
}

impl Postgres {
    /// Creates a cluster and starts the server; ready when a client connects.
    pub async fn start() -> Result<Self, HarnessError> {
        let mut pg = Self::create()?;
        pg.start_server().await?;
        Ok(pg)
    }

    /// Creates a cluster (`initdb`) on a free port without starting it, so a test can watch a
    /// client cope with a server that is not up yet.
    pub fn create() -> Result<Self, HarnessError> {
        let bin_dir = bin_dir()?;
        let run_as = run_as()?;
        let dir = tempfile::tempdir()?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let mut cmd = command(&run_as, &bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"])
            .current_dir(dir.path());
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: "initdb",
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::Unexpected(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Self {
            port: free_port(),
            bin_dir,
            run_as,
            data,
            log,
            server: None,
            dir,
        })
    }

    /// Starts (or restarts) the server on its port and data, and waits until a client can
    /// connect; fails with the server's log if it exits first or takes longer than 60 s.
    pub async fn start_server(&mut self) -> Result<(), HarnessError> {
        if self.server.is_some() {
            return Ok(());
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let mut cmd = command(&self.run_as, &self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .current_dir(self.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            what: "postgres",
            source,
        })?;
        self.server = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls),
            )
            .await;
            if let Ok(Ok((client, connection))) = attempt {
                drop(client);
                let _ = connection.await;
                return Ok(());
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                // A server that never became ready may still run (or have left children in
                // its group): stop it before forgetting it, or it outlives the test.
                self.shut_down_now();
                return Err(HarnessError::NotReady {
                    what: "postgres",
                    secs: READY_TIMEOUT.as_secs(),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server with a fast shutdown (SIGINT) and waits for it to exit.
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        let pid = self.postmaster_pid().unwrap_or(child.id());
        signal("CONT", pid);
        signal("INT", pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                return Err(HarnessError::Unexpected(format!(
                    "postgres did not stop within 30 s of SIGINT; log:\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Suspends the server (SIGSTOP): connections are accepted by the kernel but never
    /// answered, like a hung database.
    pub fn freeze(&self) {
        if let Some(pid) = self.postmaster_pid() {
            signal("STOP", pid);
        }
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        if let Some(pid) = self.postmaster_pid() {
            signal("CONT", pid);
        }
    }

    /// The port it listens on (fixed for the life of the value).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string: `host=127.0.0.1 port=N user=postgres dbname=postgres`.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A connected client; its connection is driven by a spawned task.
    pub async fn client(&self) -> Result<tokio_postgres::Client, HarnessError> {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .map_err(|e| HarnessError::Unexpected(format!("connecting to postgres: {e}")))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs `sql` (one or more statements separated by `;`).
    pub async fn execute(&self, sql: &str) -> Result<(), HarnessError> {
        self.client()
            .await?
            .batch_execute(sql)
            .await
            .map_err(|e| HarnessError::Unexpected(format!("postgres: {sql}: {e:?}")))
    }

    /// Requires a password (SCRAM) for TCP logins of every user but `postgres` (which
    /// [`Postgres::client`] uses), reloads the configuration and waits until it is in force.
    pub async fn require_passwords(&self) -> Result<(), HarnessError> {
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        self.execute("SELECT pg_reload_conf()").await?;
        // The reload is asynchronous: wait until a login without a password is asked for one.
        let probe = format!(
            "host=127.0.0.1 port={} user=password_probe dbname=postgres",
            self.port
        );
        crate::eventually(Duration::from_secs(10), || {
            let probe = probe.clone();
            async move {
                match tokio_postgres::connect(&probe, tokio_postgres::NoTls).await {
                    // "invalid configuration: password missing" (the client has none to give).
                    Err(e) if vla_pipeline::error_chain(&e).contains("password") => Ok(()),
                    Err(e) => Err(format!(
                        "password authentication not in force yet: {}",
                        vla_pipeline::error_chain(&e)
                    )),
                    Ok(_) => Err("a login without a password was accepted".into()),
                }
            }
        })
        .await
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The postmaster's pid, from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Postgres {
    /// Stops the server at once, if one was started: an immediate shutdown (SIGQUIT) lets the
    /// postmaster release its shared memory; SIGKILL to the process group if it lingers or
    /// already exited (a child it left behind dies with the group).
    fn shut_down_now(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let pid = self.postmaster_pid().unwrap_or(child.id());
            signal("CONT", pid);
            signal("QUIT", pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_group(&mut child);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shut_down_now();
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL to the child's process group (the child leads it), then reap the child.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--"])
        .arg(format!("-{}", child.id()))
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn command(run_as: &Option<RunAs>, program: &Path) -> Command {
    match run_as {
        Some(user) => user.command(program),
        None => Command::new(program),
    }
}

/// The directory holding `initdb` and `postgres`: the highest `/usr/lib/postgresql/N/bin`,
/// else where `PATH` has them.
fn bin_dir() -> Result<PathBuf, HarnessError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let initdb = find_binary("initdb", &[]);
    let postgres = find_binary("postgres", &[]);
    match (initdb, postgres) {
        (Some(i), Some(p)) if i.parent() == p.parent() => {
            Ok(i.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        _ => Err(HarnessError::Missing {
            what: "postgresql (initdb and postgres)",
            tried: "/usr/lib/postgresql/*/bin and PATH".into(),
            how: HOW,
        }),
    }
}

/// `Some` when running as root: PostgreSQL must then run as the `postgres` user.
fn run_as() -> Result<Option<RunAs>, HarnessError> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let missing = || HarnessError::Missing {
        what: "the postgres user (PostgreSQL refuses to run as root)",
        tried: "`id -u postgres`".into(),
        how: HOW,
    };
    let uid = id(&["-u", "postgres"]).map_err(|_| missing())?;
    let gid = id(&["-g", "postgres"]).map_err(|_| missing())?;
    let setpriv = find_binary("setpriv", &["/usr/bin/setpriv", "/bin/setpriv"]);
    Ok(Some(RunAs { uid, gid, setpriv }))
}

fn id(args: &[&str]) -> Result<u32, HarnessError> {
    let out = Command::new("id")
        .args(args)
        .output()
        .map_err(|source| HarnessError::Spawn { what: "id", source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|_| HarnessError::Unexpected(format!("`id {}` said {text:?}", args.join(" "))))
}
