//! The MQTT wire layer (being written).
