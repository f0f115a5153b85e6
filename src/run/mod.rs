//! A run of many files: which files it takes ([`select`]).

pub mod select;

pub use select::{IMAGE_EXTENSIONS, Item, Selection, image_list, scan_images};
