//! The drivers' integration tests, one binary: real QEMU processes and a real
//! libvirtd, booting the project's test guest.

mod common;

#[cfg(feature = "libvirt")]
mod libvirt_guest;
#[cfg(feature = "libvirt")]
mod libvirt_guest_isolation;
mod qemu_blank_disk;
mod qemu_guest;
mod qemu_guest_isolation;
