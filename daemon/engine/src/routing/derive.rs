//! Logsource derivation from well-known event shapes.
//!
//! Only shapes that identify their source beyond doubt are read; nothing is
//! guessed from how an event arrived (syslog, JSON, OTLP). Derived values
//! fill dimensions that the field map and static values left unknown.
//!
//! | Shape | Recognised by | Derived |
//! | --- | --- | --- |
//! | Windows event log | `Channel` (also `Event.System.Channel`, `winlog.channel`) | `product: windows`; `service` from [`WINDOWS_CHANNELS`]; `category` from [`sysmon_categories`] on the Sysmon channel, from [`channel_categories`] elsewhere |
//! | AWS CloudTrail | `eventSource` ending in `.amazonaws.com`, with `eventName` and `eventVersion` | `product: aws`, `service: cloudtrail` |
//! | GCP Cloud Audit Logs | `protoPayload.@type` = `type.googleapis.com/google.cloud.audit.AuditLog` | `product: gcp`, `service: gcp.audit` |
//! | Azure Monitor diagnostic records | `category` of `SignInLogs`, `AuditLogs` or an activity-log category, with `operationName` and `resourceId` | `product: azure`, `service: signinlogs`, `auditlogs` or `activitylogs` |
//!
//! The event ID is read from `EventID` (also `Event.System.EventID`,
//! `winlog.event_id`, `event.code`), as a number or a numeric string.

use serde_json::Value;

use super::Derived;

/// Windows event log channels and the Sigma `service` each one is, as the
/// SigmaHQ logsource taxonomy and pySigma's Windows pipeline name them.
/// Channels are compared case-insensitively.
pub const WINDOWS_CHANNELS: &[(&str, &str)] = &[
    ("Security", "security"),
    ("System", "system"),
    ("Application", "application"),
    ("Microsoft-Windows-Sysmon/Operational", "sysmon"),
    ("Microsoft-Windows-PowerShell/Operational", "powershell"),
    ("PowerShellCore/Operational", "powershell"),
    ("Windows PowerShell", "powershell-classic"),
    (
        "Microsoft-Windows-TaskScheduler/Operational",
        "taskscheduler",
    ),
    ("Microsoft-Windows-WMI-Activity/Operational", "wmi"),
    ("DNS Server", "dns-server"),
    ("Microsoft-Windows-DNS-Server/Audit", "dns-server-audit"),
    (
        "Microsoft-Windows-DNS-Server/Analytical",
        "dns-server-analytic",
    ),
    (
        "Microsoft-Windows-DNS Client Events/Operational",
        "dns-client",
    ),
    (
        "Microsoft-Windows-DriverFrameworks-UserMode/Operational",
        "driver-framework",
    ),
    ("Microsoft-Windows-NTLM/Operational", "ntlm"),
    ("Microsoft-Windows-DHCP-Server/Operational", "dhcp"),
    ("MSExchange Management", "msexchange-management"),
    ("Microsoft-Windows-AppLocker/MSI and Script", "applocker"),
    ("Microsoft-Windows-AppLocker/EXE and DLL", "applocker"),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Deployment",
        "applocker",
    ),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Execution",
        "applocker",
    ),
    ("Microsoft-Windows-PrintService/Admin", "printservice-admin"),
    (
        "Microsoft-Windows-PrintService/Operational",
        "printservice-operational",
    ),
    (
        "Microsoft-Windows-CodeIntegrity/Operational",
        "codeintegrity-operational",
    ),
    ("Microsoft-Windows-SmbClient/Security", "smbclient-security"),
    (
        "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
        "firewall-as",
    ),
    ("Microsoft-Windows-Bits-Client/Operational", "bits-client"),
    (
        "Microsoft-Windows-Windows Defender/Operational",
        "windefend",
    ),
    (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        "terminalservices-localsessionmanager",
    ),
    ("Microsoft-ServiceBus-Client", "microsoft-servicebus-client"),
    ("Microsoft-Windows-LDAP-Client/Debug", "ldap_debug"),
    (
        "Microsoft-Windows-Security-Mitigations/Kernel Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-Security-Mitigations/User Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-Diagnosis-Scripted/Operational",
        "diagnosis-scripted",
    ),
    ("Microsoft-Windows-Shell-Core/Operational", "shell-core"),
    ("OpenSSH/Operational", "openssh"),
    (
        "Microsoft-Windows-BitLocker/BitLocker Management",
        "bitlocker",
    ),
    (
        "Microsoft-Windows-AppXDeploymentServer/Operational",
        "appxdeployment-server",
    ),
    (
        "Microsoft-Windows-AppxPackaging/Operational",
        "appxpackaging-om",
    ),
    (
        "Microsoft-Windows-AppModel-Runtime/Admin",
        "appmodel-runtime",
    ),
    (
        "Microsoft-Windows-IIS-Configuration/Operational",
        "iis-configuration",
    ),
    ("Microsoft-Windows-CAPI2/Operational", "capi2"),
    (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
        "certificateservicesclient-lifecycle-system",
    ),
    ("Microsoft-Windows-LSA/Operational", "lsa-server"),
    (
        "Microsoft-Windows-SMBServer/Connectivity",
        "smbserver-connectivity",
    ),
];

/// The categories of a Sysmon event by its event ID, as the SigmaHQ
/// taxonomy assigns them (several where categories overlap, such as the
/// registry ones); empty for an ID that has none.
pub fn sysmon_categories(event_id: u64) -> &'static [&'static str] {
    match event_id {
        1 => &["process_creation"],
        2 => &["file_change"],
        3 => &["network_connection"],
        4 | 16 => &["sysmon_status"],
        5 => &["process_termination"],
        6 => &["driver_load"],
        7 => &["image_load"],
        8 => &["create_remote_thread"],
        9 => &["raw_access_thread"],
        10 => &["process_access"],
        11 => &["file_event"],
        12 => &["registry_event", "registry_add", "registry_delete"],
        13 => &["registry_event", "registry_set"],
        14 => &["registry_event", "registry_rename"],
        15 => &["create_stream_hash"],
        17 | 18 => &["pipe_created"],
        19..=21 => &["wmi_event"],
        22 => &["dns_query"],
        23 | 26 => &["file_delete"],
        24 => &["clipboard_capture"],
        25 => &["process_tampering"],
        27 => &["file_block_executable"],
        28 => &["file_block_shredding"],
        29 => &["file_executable_detected"],
        255 => &["sysmon_error"],
        _ => &[],
    }
}

/// The generic categories some events of other channels carry (a Security
/// 4688 is a process creation; PowerShell script blocks are `ps_script`).
/// Other events of these channels, and of every other channel, leave the
/// category unknown.
pub fn channel_categories(service: &str, event_id: u64) -> &'static [&'static str] {
    match (service, event_id) {
        ("security", 4688) => &["process_creation"],
        ("powershell", 4103) => &["ps_module"],
        ("powershell", 4104) => &["ps_script"],
        ("powershell-classic", 400) => &["ps_classic_start"],
        ("powershell-classic", 600) => &["ps_classic_provider_start"],
        ("powershell-classic", 800) => &["ps_classic_script"],
        _ => &[],
    }
}

/// Azure Monitor diagnostic categories of the activity log.
const AZURE_ACTIVITY_CATEGORIES: &[&str] = &[
    "Administrative",
    "Security",
    "ServiceHealth",
    "Alert",
    "Recommendation",
    "Policy",
    "Autoscale",
    "ResourceHealth",
];

/// Every `(dimension, value)` derivation can produce.
pub fn vocabulary() -> impl Iterator<Item = (&'static str, &'static str)> {
    let products = ["windows", "aws", "gcp", "azure"].map(|p| ("product", p));
    let services = [
        "cloudtrail",
        "gcp.audit",
        "signinlogs",
        "auditlogs",
        "activitylogs",
    ]
    .map(|s| ("service", s));
    let windows_services = WINDOWS_CHANNELS.iter().map(|(_, s)| ("service", *s));
    let sysmon = (0..=255).flat_map(|id| sysmon_categories(id).iter().map(|c| ("category", *c)));
    let other = [
        ("security", 4688),
        ("powershell", 4103),
        ("powershell", 4104),
    ]
    .into_iter()
    .chain([400, 600, 800].map(|id| ("powershell-classic", id)))
    .flat_map(|(service, id)| {
        channel_categories(service, id)
            .iter()
            .map(|c| ("category", *c))
    });
    products
        .into_iter()
        .chain(services)
        .chain(windows_services)
        .chain(sysmon)
        .chain(other)
}

/// The dimensions a well-known shape of `event` tells.
pub fn derive(event: &Value) -> Derived {
    let Value::Object(_) = event else {
        return Derived::default();
    };
    const CHANNELS: &[&[&str]] = &[
        &["Channel"],
        &["Event", "System", "Channel"],
        &["winlog", "channel"],
    ];
    if let Some(channel) = CHANNELS.iter().find_map(|path| str_at(event, path)) {
        windows(event, channel)
    } else if is_cloudtrail(event) {
        Derived {
            product: &["aws"],
            service: &["cloudtrail"],
            category: &[],
        }
    } else if str_at(event, &["protoPayload", "@type"])
        == Some("type.googleapis.com/google.cloud.audit.AuditLog")
    {
        Derived {
            product: &["gcp"],
            service: &["gcp.audit"],
            category: &[],
        }
    } else if let Some(service) = azure_service(event) {
        Derived {
            product: &["azure"],
            service,
            category: &[],
        }
    } else {
        Derived::default()
    }
}

fn windows(event: &Value, channel: &str) -> Derived {
    let mut derived = Derived {
        product: &["windows"],
        ..Derived::default()
    };
    let Some((_, service)) = WINDOWS_CHANNELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(channel))
    else {
        return derived;
    };
    derived.service = std::slice::from_ref(service);
    if let Some(event_id) = event_id(event) {
        derived.category = if *service == "sysmon" {
            sysmon_categories(event_id)
        } else {
            channel_categories(service, event_id)
        };
    }
    derived
}

fn event_id(event: &Value) -> Option<u64> {
    const PATHS: &[&[&str]] = &[
        &["EventID"],
        &["Event", "System", "EventID"],
        &["winlog", "event_id"],
        &["event", "code"],
    ];
    PATHS.iter().find_map(|path| match at(event, path)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        // `<EventID Qualifiers="...">4688</EventID>` rendered as an object.
        Value::Object(map) => map
            .get("#text")
            .or_else(|| map.get("value"))?
            .as_str()?
            .parse()
            .ok(),
        _ => None,
    })
}

fn is_cloudtrail(event: &Value) -> bool {
    str_at(event, &["eventSource"]).is_some_and(|s| s.ends_with(".amazonaws.com"))
        && at(event, &["eventName"]).is_some()
        && at(event, &["eventVersion"]).is_some()
}

fn azure_service(event: &Value) -> Option<&'static [&'static str]> {
    at(event, &["operationName"])?;
    at(event, &["resourceId"]).or_else(|| at(event, &["resourceID"]))?;
    let category = str_at(event, &["category"])?;
    if category.eq_ignore_ascii_case("SignInLogs") {
        Some(&["signinlogs"])
    } else if category.eq_ignore_ascii_case("AuditLogs") {
        Some(&["auditlogs"])
    } else if AZURE_ACTIVITY_CATEGORIES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(category))
    {
        Some(&["activitylogs"])
    } else {
        None
    }
}

/// The value at a path of object keys; a flat dotted key is tried first.
fn at<'e>(event: &'e Value, path: &[&str]) -> Option<&'e Value> {
    if path.len() > 1
        && let Some(value) = event.get(path.join("."))
    {
        return Some(value);
    }
    path.iter().try_fold(event, |node, key| node.get(key))
}

fn str_at<'e>(event: &'e Value, path: &[&str]) -> Option<&'e str> {
    at(event, path)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn derived(event: Value) -> Vec<(String, Vec<String>)> {
        let d = derive(&event);
        [
            ("product", d.product),
            ("service", d.service),
            ("category", d.category),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(d, v)| (d.to_owned(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
    }

    fn dims(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(d, v)| (d.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn windows_channels_and_event_ids() {
        assert_eq!(
            derived(json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1})),
            dims(&[
                ("product", &["windows"]),
                ("service", &["sysmon"]),
                ("category", &["process_creation"])
            ])
        );
        assert_eq!(
            derived(json!({"Channel": "microsoft-windows-sysmon/operational", "EventID": "13"})),
            dims(&[
                ("product", &["windows"]),
                ("service", &["sysmon"]),
                ("category", &["registry_event", "registry_set"])
            ])
        );
        assert_eq!(
            derived(json!({"Channel": "Security", "EventID": 4624})),
            dims(&[("product", &["windows"]), ("service", &["security"])])
        );
        assert_eq!(
            derived(json!({"winlog": {"channel": "Security", "event_id": 4688}})),
            dims(&[
                ("product", &["windows"]),
                ("service", &["security"]),
                ("category", &["process_creation"])
            ])
        );
        assert_eq!(
            derived(
                json!({"Event": {"System": {"Channel": "Microsoft-Windows-PowerShell/Operational", "EventID": 4104}}})
            ),
            dims(&[
                ("product", &["windows"]),
                ("service", &["powershell"]),
                ("category", &["ps_script"])
            ])
        );
        // An unknown channel is still Windows; its service stays unknown.
        assert_eq!(
            derived(json!({"Channel": "Contoso-App/Operational", "EventID": 1})),
            dims(&[("product", &["windows"])])
        );
    }

    #[test]
    fn cloud_audit_shapes() {
        assert_eq!(
            derived(
                json!({"eventSource": "iam.amazonaws.com", "eventName": "CreateUser", "eventVersion": "1.08"})
            ),
            dims(&[("product", &["aws"]), ("service", &["cloudtrail"])])
        );
        assert_eq!(
            derived(
                json!({"protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog"}})
            ),
            dims(&[("product", &["gcp"]), ("service", &["gcp.audit"])])
        );
        assert_eq!(
            derived(
                json!({"category": "SignInLogs", "operationName": "Sign-in activity", "resourceId": "/tenants/x"})
            ),
            dims(&[("product", &["azure"]), ("service", &["signinlogs"])])
        );
        // A proxy log's URL category is not an Azure category.
        assert!(derived(json!({"category": "News", "c-uri": "http://x"})).is_empty());
        assert!(derived(json!({"message": "sshd[1]: Accepted"})).is_empty());
    }
}
