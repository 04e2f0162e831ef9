//! Decoding an object without its `metadata.managedFields`: the field is skipped in the
//! response's bytes and never allocated, which is cheaper than dropping it after decoding (no
//! transient tree per object, nothing for the allocator to keep in holes between the objects
//! a store holds).
//!
//! [`Trimmed`] wraps the object's own `Deserialize` in a deserializer that passes everything
//! through, except that in the top-level map's `metadata` value it skips the
//! `managedFields` entry. Any object type works: k8s-openapi's, `DynamicObject`,
//! `PartialObjectMeta`.

use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
    value::BorrowedStrDeserializer,
};

/// An object decoded without `metadata.managedFields`.
#[derive(Clone, Debug)]
pub(crate) struct Trimmed<K>(pub(crate) K);

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Trimmed<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(Proxy {
            inner: deserializer,
            level: Level::Object,
        })
        .map(Trimmed)
    }
}

/// Where the proxy is in the object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The object's own map: its `metadata` value is read at [`Level::Metadata`].
    Object,
    /// The `metadata` map: its `managedFields` entry is skipped.
    Metadata,
}

/// Passes every request on to `inner`; a map read at `level` goes through [`ProxyMap`].
struct Proxy<D> {
    inner: D,
    level: Level,
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Proxy<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_any(ProxyVisitor {
            inner: visitor,
            level,
        })
    }

    // k8s-openapi reads `metadata` as an `Option<ObjectMeta>`: the value inside goes through
    // the proxy too.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_option(ProxyVisitor {
            inner: visitor,
            level,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_map(ProxyVisitor {
            inner: visitor,
            level,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_struct(
            name,
            fields,
            ProxyVisitor {
                inner: visitor,
                level,
            },
        )
    }

    forward! {
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The caller's visitor, given a [`ProxyMap`] when the value is a map.
struct ProxyVisitor<V> {
    inner: V,
    level: Level,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<Self::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ProxyVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(ProxyMap {
            inner: map,
            level: self.level,
            metadata_next: false,
        })
    }

    forward_visit! {
        visit_bool(bool);
        visit_i64(i64);
        visit_i128(i128);
        visit_u64(u64);
        visit_u128(u128);
        visit_f64(f64);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Proxy {
            inner: deserializer,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

/// A map's entries as the caller sees them: at [`Level::Object`], `metadata`'s value is read
/// at [`Level::Metadata`]; there, `managedFields` is skipped.
struct ProxyMap<A> {
    inner: A,
    level: Level,
    /// The key just returned was the object's `metadata`.
    metadata_next: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ProxyMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if self.level == Level::Metadata && key.as_str() == "managedFields" {
                // Read past it without building anything.
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.metadata_next = self.level == Level::Object && key.as_str() == "metadata";
            return match key {
                Key::Borrowed(key) => seed
                    .deserialize(BorrowedStrDeserializer::<A::Error>::new(key))
                    .map(Some),
                Key::Owned(key) => seed.deserialize(key.into_deserializer()).map(Some),
            };
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if std::mem::take(&mut self.metadata_next) {
            self.inner.next_value_seed(Seeded {
                inner: seed,
                level: Level::Metadata,
            })
        } else {
            self.inner.next_value_seed(seed)
        }
    }
}

/// A map key, borrowed from the input where it can be.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map key")
            }

            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }

            fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The caller's seed, reading its value through a [`Proxy`] at `level`.
struct Seeded<S> {
    inner: S,
    level: Level,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seeded<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Proxy {
            inner: deserializer,
            level: self.level,
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube_client::core::{DynamicObject, PartialObjectMeta};
    use serde_json::json;

    use super::Trimmed;

    fn object() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "a",
                "namespace": "ns",
                "resourceVersion": "7",
                "labels": {"app": "web"},
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Apply",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
                }],
                "annotations": {"note": "after managedFields"}
            },
            // Not the object's metadata: left alone.
            "data": {"managedFields": "kept", "metadata": "kept"}
        })
    }

    #[test]
    fn a_typed_object_is_decoded_without_its_managed_fields_and_otherwise_whole() {
        let text = object().to_string();
        let full: ConfigMap = serde_json::from_str(&text).unwrap();
        let Trimmed(trimmed) = serde_json::from_str::<Trimmed<ConfigMap>>(&text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert_eq!(trimmed.metadata.managed_fields, None);
        let mut expected = full;
        expected.metadata.managed_fields = None;
        assert_eq!(trimmed, expected);
    }

    #[test]
    fn dynamic_and_metadata_only_objects_are_decoded_without_managed_fields() {
        let text = object().to_string();
        let Trimmed(dynamic) = serde_json::from_str::<Trimmed<DynamicObject>>(&text).unwrap();
        assert_eq!(dynamic.metadata.managed_fields, None);
        assert_eq!(dynamic.metadata.name.as_deref(), Some("a"));
        assert_eq!(dynamic.data["data"]["managedFields"], "kept");
        let Trimmed(meta) =
            serde_json::from_str::<Trimmed<PartialObjectMeta<ConfigMap>>>(&text).unwrap();
        assert_eq!(meta.metadata.managed_fields, None);
        assert_eq!(
            meta.metadata.annotations.unwrap()["note"],
            "after managedFields"
        );
    }

    #[test]
    fn escaped_keys_and_bad_input_are_handled_like_the_plain_decoder() {
        // An escaped key cannot be borrowed from the input.
        let text = r#"{"metadata":{"name":"a","managedFields":[],"l\u0061bels":{"x":"y"}}}"#;
        let Trimmed(cm) = serde_json::from_str::<Trimmed<ConfigMap>>(text).unwrap();
        assert_eq!(cm.metadata.labels.unwrap()["x"], "y");
        for bad in [
            r#"{"metadata": 5}"#,
            r#"{"metadata":{"managedFields":[}}"#,
            "[]",
            "{",
        ] {
            assert!(serde_json::from_str::<ConfigMap>(bad).is_err());
            assert!(
                serde_json::from_str::<Trimmed<ConfigMap>>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
