//! Storage as the guests see it: each guest's mount points and their storage class.

pub mod guest_mounts;
