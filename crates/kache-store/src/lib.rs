//! A shared, always-consistent in-memory cache of Kubernetes objects.
