//! Pure IPAM core (being built).
