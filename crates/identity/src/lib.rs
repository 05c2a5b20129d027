//! SPIFFE identities, the mesh CA, workload certificates and mutual-TLS configurations that verify
//! peers by SPIFFE id.
