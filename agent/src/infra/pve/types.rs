//! Typed Proxmox VE API answers.
//!
//! PVE is loose with JSON types: numbers sometimes arrive as strings (`"vmid":"101"`), booleans
//! as 0/1, and optional keys are simply absent. The decoders here accept exactly those variants
//! and nothing looser, and ignore unknown keys (newer PVE versions add fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::upid::Upid;

/// Numbers PVE sends either as JSON numbers or as numeric strings.
mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        U(u64),
        F(f64),
        S(String),
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::U(v) => Ok(v),
            NumOrStr::F(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as u64),
            NumOrStr::F(v) => Err(D::Error::custom(format!("expected an integer, got {v}"))),
            NumOrStr::S(s) => s.trim().parse().map_err(D::Error::custom),
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Value>::deserialize(d)?
            .map(|v| u64(v).map_err(D::Error::custom))
            .transpose()
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = u64(d)?;
        u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
    }

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::U(v) => Ok(v as f64),
            NumOrStr::F(v) => Ok(v),
            NumOrStr::S(s) => s.trim().parse().map_err(D::Error::custom),
        }
    }

    /// PVE booleans: 0/1, "0"/"1", or true/false.
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(b),
            serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            serde_json::Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            serde_json::Value::String(s) if s == "0" => Ok(false),
            serde_json::Value::String(s) if s == "1" => Ok(true),
            other => Err(D::Error::custom(format!("expected 0 or 1, got {other}"))),
        }
    }
}

fn de_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok(split_tags(&raw))
}

/// PVE tag lists are separated by `;`, `,` or spaces.
pub fn split_tags(raw: &str) -> Vec<String> {
    raw.split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub release: String,
    pub repoid: String,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeInfo {
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    #[serde(default)]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxcpu: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub uptime: u64,
    /// SHA-256 of the node's certificate, colon-separated upper-case hex: the pin.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

/// `memory` and `rootfs` blocks of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct MemoryUsage {
    #[serde(deserialize_with = "lenient::u64")]
    pub total: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub used: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub free: u64,
}

/// `rootfs` block of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct FsUsage {
    #[serde(deserialize_with = "lenient::u64")]
    pub total: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub used: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub avail: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub free: u64,
}

/// `cpuinfo` block of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct CpuInfo {
    #[serde(deserialize_with = "lenient::u64")]
    pub cpus: u64,
    #[serde(default)]
    pub model: String,
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeStatus {
    /// CPU load as a fraction 0–1.
    #[serde(deserialize_with = "lenient::f64")]
    pub cpu: f64,
    /// 1, 5 and 15 minute load averages, as PVE sends them (strings).
    pub loadavg: Vec<String>,
    pub memory: MemoryUsage,
    pub rootfs: FsUsage,
    #[serde(deserialize_with = "lenient::u64")]
    pub uptime: u64,
    pub cpuinfo: CpuInfo,
    #[serde(default)]
    pub kversion: String,
    #[serde(default)]
    pub pveversion: String,
}

/// One guest of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ClusterGuest {
    /// `lxc/101` or `qemu/100`.
    pub id: String,
    /// `lxc` or `qemu`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(deserialize_with = "lenient::u32")]
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    pub status: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub disk: u64,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub maxcpu: f64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub uptime: u64,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    #[serde(default, deserialize_with = "de_tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lock: Option<String>,
}

/// One guest of `GET /nodes/{node}/lxc`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LxcSummary {
    #[serde(deserialize_with = "lenient::u32")]
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// `running` or `stopped`.
    pub status: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub cpus: f64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub uptime: u64,
    #[serde(default, deserialize_with = "de_tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
}

/// `GET /nodes/{node}/lxc/{vmid}/status/current`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LxcStatus {
    #[serde(deserialize_with = "lenient::u32")]
    pub vmid: u32,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub uptime: u64,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub disk: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxdisk: u64,
    #[serde(default)]
    pub lock: Option<String>,
}

/// `GET /nodes/{node}/lxc/{vmid}/config`: the well-known keys typed, `mpN`/`netN` gathered,
/// everything else kept verbatim in `other`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LxcConfig {
    pub hostname: Option<String>,
    pub arch: Option<String>,
    pub ostype: Option<String>,
    pub cores: Option<u64>,
    pub memory: Option<u64>,
    pub swap: Option<u64>,
    /// Raw `rootfs` value, e.g. `local-lvm:vm-101-disk-0,size=8G`.
    pub rootfs: Option<String>,
    /// `mp0`…`mp255`, raw values.
    pub mount_points: BTreeMap<u16, String>,
    /// `net0`…, raw values.
    pub nets: BTreeMap<u16, String>,
    /// Raw `features`, e.g. `keyctl=1,nesting=1`.
    pub features: Option<String>,
    pub unprivileged: bool,
    pub tags: Vec<String>,
    pub lock: Option<String>,
    pub digest: Option<String>,
    pub other: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for LxcConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut cfg = LxcConfig {
            hostname: None,
            arch: None,
            ostype: None,
            cores: None,
            memory: None,
            swap: None,
            rootfs: None,
            mount_points: BTreeMap::new(),
            nets: BTreeMap::new(),
            features: None,
            unprivileged: false,
            tags: Vec::new(),
            lock: None,
            digest: None,
            other: BTreeMap::new(),
        };
        let text = |key: &str, v: serde_json::Value| -> Result<String, D::Error> {
            match v {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(D::Error::custom(format!(
                    "config key {key}: unexpected {other}"
                ))),
            }
        };
        for (key, value) in map {
            let indexed =
                |prefix: &str| key.strip_prefix(prefix).and_then(|n| n.parse::<u16>().ok());
            match key.as_str() {
                "hostname" => cfg.hostname = Some(text(&key, value)?),
                "arch" => cfg.arch = Some(text(&key, value)?),
                "ostype" => cfg.ostype = Some(text(&key, value)?),
                "cores" => cfg.cores = Some(lenient::u64(value).map_err(D::Error::custom)?),
                "memory" => cfg.memory = Some(lenient::u64(value).map_err(D::Error::custom)?),
                "swap" => cfg.swap = Some(lenient::u64(value).map_err(D::Error::custom)?),
                "rootfs" => cfg.rootfs = Some(text(&key, value)?),
                "features" => cfg.features = Some(text(&key, value)?),
                "unprivileged" => {
                    cfg.unprivileged = lenient::bool(value).map_err(D::Error::custom)?
                }
                "tags" => cfg.tags = split_tags(&text(&key, value)?),
                "lock" => cfg.lock = Some(text(&key, value)?),
                "digest" => cfg.digest = Some(text(&key, value)?),
                _ => {
                    if let Some(n) = indexed("mp") {
                        cfg.mount_points.insert(n, text(&key, value)?);
                    } else if let Some(n) = indexed("net") {
                        cfg.nets.insert(n, text(&key, value)?);
                    } else {
                        cfg.other.insert(key, value);
                    }
                }
            }
        }
        Ok(cfg)
    }
}

impl LxcConfig {
    /// True when `features` enables `name` (e.g. `keyctl`).
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.as_deref().is_some_and(|f| {
            f.split(',')
                .any(|kv| matches!(kv.split_once('='), Some((k, "1")) if k == name))
        })
    }
}

/// One entry of `GET .../snapshot`. The list always includes the pseudo-snapshot `current`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub snaptime: Option<u64>,
    #[serde(default)]
    pub parent: Option<String>,
}

/// One entry of `GET /storage` (cluster storage configuration).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StorageConfig {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub datastore: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// `lvm`/`lvmthin`: the volume group.
    #[serde(default)]
    pub vgname: Option<String>,
    /// `lvmthin`: the thin pool LV in `vgname`.
    #[serde(default)]
    pub thinpool: Option<String>,
    /// `pbs`: the client key's fingerprint (or `1`) when one is configured; the key itself is
    /// in `/etc/pve/priv/storage/<storage>.enc` and never in the API.
    #[serde(default, rename = "encryption-key")]
    pub encryption_key: Option<String>,
}

/// One entry of `GET /nodes/{node}/storage`, or the answer of `.../storage/{s}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StorageStatus {
    /// Absent in `/status` answers; filled in by the client from the request.
    #[serde(default)]
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub active: bool,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub shared: bool,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub total: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub used: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub avail: u64,
    #[serde(default)]
    pub used_fraction: Option<f64>,
}

/// Verification state PVE reports for a backup volume (PBS-backed).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct VolumeVerification {
    pub state: String,
    #[serde(default)]
    pub upid: Option<String>,
}

/// One entry of `GET /nodes/{node}/storage/{s}/content`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StorageVolume {
    pub volid: String,
    #[serde(default)]
    pub format: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub size: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub ctime: u64,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub protected: bool,
    #[serde(default)]
    pub verification: Option<VolumeVerification>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Present once stopped: `OK`, `WARNINGS: <n>`, or an error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default)]
    pub id: String,
    pub user: String,
    pub node: String,
    pub upid: Upid,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub starttime: u64,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct TaskSummary {
    pub upid: Upid,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default)]
    pub id: String,
    pub user: String,
    pub node: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub starttime: u64,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub endtime: Option<u64>,
    /// Final status text once finished (`OK`, an error, …); absent while running.
    #[serde(default)]
    pub status: Option<String>,
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct TaskLogLine {
    #[serde(deserialize_with = "lenient::u64")]
    pub n: u64,
    pub t: String,
}

/// One entry of `GET /nodes/{node}/disks/list`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PhysicalDisk {
    pub devpath: String,
    #[serde(default)]
    pub by_id_link: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub size: u64,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub wearout: serde_json::Value,
    #[serde(default)]
    pub used: Option<String>,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub wwn: String,
}

/// One entry of `GET /nodes/{node}/disks/lvmthin`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ThinPool {
    pub lv: String,
    #[serde(default)]
    pub vg: String,
    #[serde(deserialize_with = "lenient::u64")]
    pub lv_size: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub used: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub metadata_size: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub metadata_used: u64,
}

/// One entry of `GET /nodes/{node}/lxc/{vmid}/interfaces`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct GuestInterface {
    pub name: String,
    #[serde(default)]
    pub hwaddr: String,
    #[serde(default)]
    pub inet: Option<String>,
    #[serde(default)]
    pub inet6: Option<String>,
}

/// `GET /access/permissions`: path → privilege → propagate flag.
pub type Permissions = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_real_lxc_config() {
        let cfg: LxcConfig = serde_json::from_value(serde_json::json!({
            "arch": "amd64", "cores": 2, "memory": 2048, "swap": 512, "hostname": "felhom-home",
            "ostype": "debian", "rootfs": "local-lvm:vm-101-disk-0,size=8G",
            "mp0": "local-lvm:vm-101-disk-1,mp=/mnt/bulk,backup=0,size=100G",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:5A:3B:01,ip=dhcp,type=veth",
            "features": "keyctl=1,nesting=1", "unprivileged": 1, "tags": "felhom;prod",
            "digest": "0f1e2d", "onboot": 1
        }))
        .unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("felhom-home"));
        assert_eq!(cfg.cores, Some(2));
        assert_eq!(
            cfg.mount_points[&0],
            "local-lvm:vm-101-disk-1,mp=/mnt/bulk,backup=0,size=100G"
        );
        assert!(cfg.nets[&0].contains("bridge=vmbr0"));
        assert!(cfg.unprivileged);
        assert!(cfg.has_feature("keyctl") && cfg.has_feature("nesting"));
        assert!(!cfg.has_feature("fuse"));
        assert_eq!(cfg.tags, vec!["felhom", "prod"]);
        assert_eq!(cfg.other["onboot"], serde_json::json!(1));
    }

    #[test]
    fn accepts_numbers_sent_as_strings() {
        let g: LxcSummary = serde_json::from_value(serde_json::json!({
            "vmid": "101", "status": "running", "maxmem": "2147483648", "cpus": 2, "uptime": 7
        }))
        .unwrap();
        assert_eq!(g.vmid, 101);
        assert_eq!(g.maxmem, 2_147_483_648);
    }

    #[test]
    fn rejects_a_boolean_that_is_neither_0_nor_1() {
        let err = serde_json::from_value::<LxcSummary>(serde_json::json!({
            "vmid": 101, "status": "running", "template": 2
        }))
        .unwrap_err();
        assert!(err.to_string().contains("expected 0 or 1, got 2"), "{err}");
    }
}
