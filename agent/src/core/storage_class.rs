//! Storage speed class a storage was given at attach time (LOCAL-API.md `class`).

/// `fast` or `slow`, as the guests' local API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    Fast,
    Slow,
}

impl StorageClass {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Fast => "fast",
            StorageClass::Slow => "slow",
        }
    }
}
