//! What the fuzz targets (crate `halyard-fuzz`, `scripts/fuzz.sh`) run inside this crate:
//! the configuration loader, with the checks each run must pass. Not an API.

use std::path::Path;

use crate::config::NodeConfig;

/// Target `config`: any text as `halyard.toml`. Either a configuration or an error that
/// names a key or line; an accepted configuration written out again reads back the same.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/halyard/halyard.toml");
    match NodeConfig::from_text(&text, path) {
        Ok(cfg) => {
            if let Ok(again) = toml::to_string(&cfg) {
                let back = NodeConfig::from_text(&again, path)
                    .unwrap_or_else(|e| panic!("written back, it is refused: {e}\n{again}"));
                assert_eq!(format!("{back:?}"), format!("{cfg:?}"));
            }
        }
        Err(e) => assert!(!e.key.is_empty() && !e.message.is_empty(), "{e:?}"),
    }
}
