//! The `meshgate` command line. Parsing only: the work happens in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate::config::{ConfigFile, Overrides};

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A Kafka governance gateway for a data mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(Box<RunArgs>),
    /// Check a policy directory: exit 0 when it loads, 1 on violations, 2 on usage or I/O errors.
    Check(CheckArgs),
    /// Print Prometheus alerting rules for the contracts' SLAs and quality targets.
    Alerts {
        /// The policy directory.
        policy_dir: PathBuf,
    },
    /// Run the policy test cases of POLICY_DIR/tests (or --cases DIR) through the judge, with
    /// no broker: exit 0 when every case gets its expected verdict, 1 when one does not, 2 when
    /// the policies or the cases do not load.
    Test(TestArgs),
    /// Judge the last records of a topic under a policy set, without writing anything
    /// (`--dry-run`): how many the set would reject, by rule, with examples. Exit 0 when it read
    /// the topic, 2 when it could not.
    Replay(ReplayArgs),
    /// Usage per owning team and principal (bytes in and out, requests) from a running gateway's
    /// admin endpoint, over whole hours back from now, as CSV or JSON.
    Chargeback(ChargebackArgs),
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write contracts in another format.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

#[derive(clap::Args)]
struct ChargebackArgs {
    /// How far back: `24h`, `7d`, `90m`, or seconds (whole hours are kept, for a week).
    #[arg(long, default_value = "24h")]
    since: String,
    /// The gateway's admin address (plain HTTP).
    #[arg(long, value_name = "HOST:PORT", default_value = meshgate::config::DEFAULT_ADMIN)]
    admin: String,
    /// `csv` or `json`.
    #[arg(long, default_value = "csv")]
    format: String,
    /// A file holding the admin endpoint's bearer token, when it requires one.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The policy directory.
    policy_dir: PathBuf,
    /// The fixture directory [default: POLICY_DIR/tests].
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Also judge every case under this (older) policy directory, and report the verdicts that
    /// changed.
    #[arg(long, value_name = "OLD_POLICY_DIR")]
    against: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum ExportCommand {
    /// The contracts of POLICY_DIR as ODCS v3.1.0 documents, on stdout (one YAML document per
    /// contract). What has no ODCS form is listed on stderr. Exit 0 when written, 1 when
    /// --contract names no contract, 2 when the policies do not load.
    Odcs {
        /// The policy directory.
        policy_dir: PathBuf,
        /// Only this contract.
        #[arg(long)]
        contract: Option<String>,
        /// The Kafka bootstrap written as the server's `host`.
        #[arg(long, default_value = "localhost:9092", value_name = "HOST:PORT")]
        bootstrap: String,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["dry_run", "to"])))]
struct ReplayArgs {
    /// Judge only, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The topic to read (for example a dead-letter topic).
    #[arg(long, value_name = "TOPIC")]
    from: String,
    /// Write the records that pass the policies now to this topic (meshgate.* headers dropped,
    /// the rest as sent), through an idempotent producer; the others are left where they are and
    /// counted by rule. Not idempotent across runs: run it once per batch of dead letters (the
    /// offsets read are printed).
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,
    /// How many of the latest records to read, over all partitions [default: 1000 with
    /// --dry-run, every record with --to].
    #[arg(long, value_name = "N")]
    last: Option<u64>,
    /// The policy directory to judge under (the change about to be deployed, or the set in
    /// force).
    #[arg(long, value_name = "DIR")]
    policies: PathBuf,
    /// A broker of the cluster (plain TCP, or TLS with --tls).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:19092")]
    bootstrap: String,
    /// Examples kept per rule.
    #[arg(long, value_name = "K", default_value_t = 3)]
    examples: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Connect to the brokers over TLS.
    #[arg(long)]
    tls: bool,
    /// The CA bundle to trust for --tls [default: the system trust store].
    #[arg(long, value_name = "PEM", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// The gateway's config file: with --dry-run, its `protect:` data keys open the protected
    /// fields of a JSON contract's topic, so that the rules judge the plaintext, as on produce.
    /// (Not with --to: a replay writes records as stored, never opened.)
    #[arg(long, value_name = "FILE", conflicts_with = "to")]
    config: Option<PathBuf>,
    /// Authenticate with SASL as this user.
    #[arg(long, value_name = "USER", requires = "sasl_password_file")]
    sasl_user: Option<String>,
    /// The file holding the SASL password (kept off the command line).
    #[arg(long, value_name = "FILE", requires = "sasl_user")]
    sasl_password_file: Option<PathBuf>,
    /// The SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, value_name = "MECHANISM", default_value = "PLAIN")]
    sasl_mechanism: String,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of audit files: exit 0 when it holds, 1 where it breaks (file:line),
    /// 2 when a file cannot be read. Give rotated files oldest first (FILE.2 FILE.1 FILE).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The policy directory to check.
    policy_dir: PathBuf,
    /// The policy directory currently in force, to check contract evolution against.
    #[arg(long, value_name = "OLD_POLICY_DIR")]
    against: Option<PathBuf>,
    /// Also list, for every ODCS contract, the rules and SLIs it became and each element it
    /// declares that meshgate does not enforce, with the reason.
    #[arg(long)]
    explain: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Gateway config file (YAML). Flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client-facing bootstrap address [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Host name written into every broker address returned to clients.
    #[arg(long, value_name = "HOST")]
    advertised_host: Option<String>,
    /// Upstream bootstrap brokers [default: 127.0.0.1:19092].
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    upstream: Option<Vec<String>>,
    /// Policy directory [default: ./policies].
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// Admin HTTP address for /metrics, /healthz, /readyz [default: 127.0.0.1:9644].
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Confluent-compatible schema registry URL.
    #[arg(long, value_name = "URL")]
    schema_registry: Option<String>,
    /// TLS certificate chain (PEM) for the client-facing ports; reloaded when the file changes.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the client-facing ports.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for client certificates: mutual TLS, the certificate's subject
    /// (RFC 2253, mapped by --tls-principal-mapping-rules) is the principal.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Kafka's ssl.principal.mapping.rules for client certificates, e.g.
    /// 'RULE:^CN=([^,]+),.*$/$1/,DEFAULT' [default: DEFAULT, the whole name].
    #[arg(long, value_name = "RULES", requires = "tls_client_ca")]
    tls_principal_mapping_rules: Option<String>,
    /// Connect to the upstream brokers over TLS, verifying their advertised names.
    #[arg(long)]
    upstream_tls: bool,
    /// CA bundle (PEM) for the upstream brokers [default: the system trust store].
    #[arg(long, value_name = "PEM", requires = "upstream_tls")]
    upstream_ca: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the admin endpoint.
    #[arg(long, value_name = "PEM", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the admin endpoint.
    #[arg(long, value_name = "PEM", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
    /// A file holding the bearer token required on every admin path but /healthz.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Check(args) => check(args),
        Command::Alerts { policy_dir } => alerts(&policy_dir),
        Command::Test(args) => policy_test(args),
        Command::Replay(args) => replay(args),
        Command::Chargeback(args) => chargeback(args),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => audit_verify(&files),
        Command::Export {
            command:
                ExportCommand::Odcs {
                    policy_dir,
                    contract,
                    bootstrap,
                },
        } => export_odcs(&policy_dir, contract.as_deref(), &bootstrap),
    }
}

fn export_odcs(dir: &std::path::Path, only: Option<&str>, bootstrap: &str) -> ExitCode {
    let set = match meshgate::policy::load::load_dir(dir) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("meshgate export: the policy set does not load");
            return ExitCode::from(2);
        }
    };
    let chosen: Vec<_> = set
        .contracts
        .iter()
        .filter(|c| only.is_none_or(|n| c.name == n))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "meshgate export: no contract{}",
            only.map(|n| format!(" named `{n}`")).unwrap_or_default()
        );
        return ExitCode::from(1);
    }
    for (i, c) in chosen.iter().enumerate() {
        let (doc, left_out) = meshgate::policy::odcs::export::contract(c, bootstrap);
        for l in &left_out {
            eprintln!("meshgate export: contract `{}`: not written: {l}", c.name);
        }
        match serde_saphyr::to_string(&doc) {
            Ok(yaml) => {
                if i > 0 {
                    println!("---");
                }
                print!("{yaml}");
            }
            Err(e) => {
                eprintln!("meshgate export: contract `{}`: {e}", c.name);
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

fn policy_test(args: TestArgs) -> ExitCode {
    use meshgate::policy::cases;
    let load = |dir: &std::path::Path| match meshgate::policy::load::load_dir(dir) {
        Ok(set) => Some(set),
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!(
                "meshgate test: the policies in {} do not load",
                dir.display()
            );
            None
        }
    };
    let Some(set) = load(&args.policy_dir) else {
        return ExitCode::from(2);
    };
    let old = match &args.against {
        Some(dir) => match load(dir) {
            Some(old) => Some(old),
            None => return ExitCode::from(2),
        },
        None => None,
    };
    let dir = args
        .cases
        .unwrap_or_else(|| args.policy_dir.join(cases::CASES_DIR));
    let files = cases::case_files(&dir);
    let cases = match cases::load(&files) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("meshgate test: {} problem(s) in the cases", errors.len());
            return ExitCode::from(2);
        }
    };
    if cases.is_empty() {
        eprintln!("meshgate test: no cases under {}", dir.display());
        return ExitCode::from(2);
    }
    let report = cases::run_all(&cases, &set, old.as_ref());
    print!("{}", report.text(&cases));
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, report.junit(&cases)) {
            eprintln!("meshgate test: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.failures(&cases) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn replay(args: ReplayArgs) -> ExitCode {
    let set = match meshgate::policy::load::load_dir(&args.policies) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!(
                "meshgate replay: the policies in {} do not load",
                args.policies.display()
            );
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = current_thread("replay") else {
        return ExitCode::from(2);
    };
    let tls = match args
        .tls
        .then(|| meshgate::tls::client_config(args.tls_ca.as_deref()))
        .transpose()
    {
        Ok(config) => config.map(tokio_rustls::TlsConnector::from),
        Err(e) => {
            eprintln!("meshgate replay: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(mechanism) = meshgate::own_client::Mechanism::from_name(&args.sasl_mechanism) else {
        eprintln!(
            "meshgate replay: --sasl-mechanism `{}` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            args.sasl_mechanism
        );
        return ExitCode::from(2);
    };
    let sasl = match (&args.sasl_user, &args.sasl_password_file) {
        (Some(user), Some(file)) => match std::fs::read_to_string(file) {
            Ok(p) => Some(meshgate::own_client::Sasl {
                mechanism,
                username: user.clone(),
                password: p.trim_end_matches(['\n', '\r']).to_string(),
            }),
            Err(e) => {
                eprintln!("meshgate replay: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let keys = match &args.config {
        None => None,
        Some(path) => {
            let config = match ConfigFile::load(path)
                .map_err(|e| vec![e])
                .and_then(|f| f.build(Overrides::default()))
            {
                Ok(c) => c,
                Err(errors) => {
                    for e in errors {
                        eprintln!("meshgate replay: config: {e}");
                    }
                    return ExitCode::from(2);
                }
            };
            let Some(protect) = &config.protect else {
                eprintln!(
                    "meshgate replay: {}: no `protect:` keys to open protected fields with",
                    path.display()
                );
                return ExitCode::from(2);
            };
            match meshgate::app::key_ring_of(protect) {
                Ok(ring) => Some(ring),
                Err(e) => {
                    eprintln!("meshgate replay: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let request = meshgate::replay::Request {
        bootstrap: &args.bootstrap,
        topic: &args.from,
        last: match (args.last, &args.to) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1000),
        },
        examples: args.examples,
        settings: meshgate::own_client::Settings {
            tls,
            sasl,
            ..Default::default()
        },
        to: args.to.as_deref(),
        keys: keys.as_deref(),
    };
    match runtime.block_on(meshgate::replay::dry_run(&request, &set)) {
        Ok(run) if args.json => {
            println!("{}", serde_json::to_string(&run).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(run) => {
            print!("{}", run.text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshgate replay: {e}");
            ExitCode::from(2)
        }
    }
}

fn chargeback(args: ChargebackArgs) -> ExitCode {
    if meshgate::chargeback::parse_window(&args.since).is_none() {
        eprintln!(
            "meshgate chargeback: --since `{}` is not a duration such as 24h, 7d, 90m",
            args.since
        );
        return ExitCode::from(2);
    }
    let token = match &args.token_file {
        None => None,
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("meshgate chargeback: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
    };
    let Some(runtime) = current_thread("chargeback") else {
        return ExitCode::from(2);
    };
    let path = format!("/chargeback?since={}&format={}", args.since, args.format);
    match runtime.block_on(meshgate::chargeback::fetch(
        &args.admin,
        &path,
        token.as_deref(),
    )) {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshgate chargeback: {e}");
            ExitCode::from(2)
        }
    }
}

/// A single-threaded runtime for a command's network calls; `None` (reported) when it cannot be
/// built.
fn current_thread(command: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("meshgate {command}: {e}");
            None
        }
    }
}

fn audit_verify(files: &[PathBuf]) -> ExitCode {
    use meshgate::audit::{verify, VerifyError, GENESIS};
    match verify(files) {
        Ok(v) => {
            let start = match v.first_prev.as_deref() {
                Some(GENESIS) | None => "from the first event".to_string(),
                Some(prev) => format!("continuing from an earlier file ending in hash {prev}"),
            };
            println!(
                "ok: {} event(s), seq {} to {}, chain intact ({start}); last hash {}",
                v.lines,
                v.first_seq.unwrap_or(0),
                v.first_seq.map_or(0, |s| s + v.lines.saturating_sub(1)),
                v.last_hash.as_deref().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        Err(e @ VerifyError::Broken { .. }) => {
            println!("{e}");
            eprintln!("meshgate audit verify: the chain is broken");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("meshgate audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn alerts(dir: &std::path::Path) -> ExitCode {
    match meshgate::policy::load::load_dir(dir) {
        Ok(set) => {
            print!("{}", meshgate::alerts::render(&set));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn check(args: CheckArgs) -> ExitCode {
    if let Err(e) = meshgate::policy::load::policy_files(&args.policy_dir) {
        eprintln!("meshgate check: {}: {e}", args.policy_dir.display());
        return ExitCode::from(2);
    }
    if let Some(old_dir) = &args.against {
        if let Err(e) = meshgate::policy::load::policy_files(old_dir) {
            eprintln!("meshgate check: {}: {e}", old_dir.display());
            return ExitCode::from(2);
        }
    }
    match meshgate::policy::load::load_dir(&args.policy_dir) {
        Ok(set) if args.against.is_some() => {
            let old_dir = args.against.as_deref().expect("checked above");
            let old = match meshgate::policy::load::load_dir(old_dir) {
                Ok(old) => old,
                Err(errors) => {
                    for e in &errors {
                        println!("{e}");
                    }
                    eprintln!(
                        "meshgate check: the old policy set ({}) does not load",
                        old_dir.display()
                    );
                    return ExitCode::from(2);
                }
            };
            let violations = meshgate::policy::evolution::check(&set, &old);
            for v in &violations {
                println!("{v}");
            }
            if violations.is_empty() {
                println!(
                    "ok: {} contract(s) evolve compatibly from {}",
                    set.contracts.len(),
                    old_dir.display()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "meshgate check: {} incompatible change(s)",
                    violations.len()
                );
                ExitCode::from(1)
            }
        }
        Ok(set) => {
            println!(
                "ok: {} file(s), {} contract(s), {} produce rule(s), naming {}, topic rules {}",
                set.files.len(),
                set.contracts.len(),
                set.produce.len(),
                if set.naming.is_some() {
                    "set"
                } else {
                    "not set"
                },
                if set.topics.is_some() {
                    "set"
                } else {
                    "not set"
                },
            );
            // Rules that do not enforce, so a reviewer sees them: shadow, canary and off.
            for r in set.rules_in_force() {
                if r.mode.name() != "enforce" {
                    let product = r
                        .contract
                        .map(|c| format!(" (contract `{}`)", c.name))
                        .unwrap_or_default();
                    println!(
                        "{}: {} rule `{}`{product} at {}",
                        r.mode.name(),
                        r.policy,
                        r.rule,
                        r.origin
                    );
                }
            }
            if args.explain {
                print!("{}", meshgate::policy::odcs::explain(&set));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("meshgate check: {} problem(s)", errors.len());
            ExitCode::from(1)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_logging();
    let file = match args.config.as_deref().map(ConfigFile::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match file.build(Overrides {
        listen: args.listen,
        advertised_host: args.advertised_host,
        upstream: args.upstream,
        policies: args.policies,
        admin: args.admin,
        schema_registry: args.schema_registry,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        tls_principal_mapping_rules: args.tls_principal_mapping_rules,
        upstream_tls: args.upstream_tls,
        upstream_ca: args.upstream_ca,
        admin_tls_cert: args.admin_tls_cert,
        admin_tls_key: args.admin_tls_key,
        admin_token_file: args.admin_token_file,
    }) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("meshgate: config: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meshgate::app::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
