//! The catalog: regions, OS images and plans (the seed's `products`). Admins
//! manage it; the public part is what the pricing page and the order form
//! show.

pub mod demo;
pub mod image_file;
pub mod image_source;
pub mod images;
pub mod plans;
pub mod regions;
