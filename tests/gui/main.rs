//! The app's tests in one binary: kittest clicks on real widgets (rendered
//! with wgpu on lavapipe), the worker protocol, and text layout.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/kittest.rs"]
mod kittest_common;

mod app;
mod app_benchmark;
mod app_export;
mod app_keypoints;
mod app_misc;
mod app_panels;
mod app_routing;
mod app_session;
mod app_sweep_gallery;
mod app_trust;
mod app_worker;
mod talk_demo;
mod text_layout;
