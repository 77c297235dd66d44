//! Heatmaps, PCA colours and markers over a photo's rect.
//!
//! With wgpu: an [`egui_wgpu::CallbackTrait`] paint callback runs
//! `shaders/overlay.wgsl`. The data grid (similarity map or PCA colours)
//! goes into an `R32Float` / `Rgba32Float` texture read with `textureLoad`
//! and interpolated by hand; colormap, opacity, range and markers come in a
//! small uniform buffer. Textures are uploaded in `prepare` only when the
//! data's generation number differs from what the slot holds, so a frame
//! that is never rendered uploads nothing and a rendered one always shows
//! the newest data.
//!
//! Without wgpu (the glow renderer) the same picture is made on the CPU with
//! [`crate::render::Colormap`] into an egui texture, and markers are egui
//! shapes.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, Painter, Pos2, Rect, Stroke, TextureHandle, TextureOptions, Vec2};
use egui_wgpu::wgpu;

use crate::matching::{RgbMap, SimilarityMap};
use crate::render::Colormap;

/// Markers one overlay can draw.
pub const MAX_MARKERS: usize = 32;
/// GPU slots unused this long are freed.
const SLOT_IDLE: Duration = Duration::from_secs(30);

/// The grid an overlay shows.
#[derive(Debug, Clone)]
pub enum OverlayData {
    /// A similarity map, coloured by the colormap.
    Heat {
        generation: u64,
        map: Arc<SimilarityMap>,
    },
    /// PCA colours.
    Rgb { generation: u64, map: Arc<RgbMap> },
}

impl OverlayData {
    pub fn generation(&self) -> u64 {
        match self {
            OverlayData::Heat { generation, .. } | OverlayData::Rgb { generation, .. } => {
                *generation
            }
        }
    }

    fn size(&self) -> (usize, usize) {
        match self {
            OverlayData::Heat { map, .. } => (map.w, map.h),
            OverlayData::Rgb { map, .. } => (map.w, map.h),
        }
    }

    /// Bilinear sample at fractional coordinates (align_corners false,
    /// border clamp), as the shader does. Heat maps give `[v, v, v]`.
    fn sample(&self, u: f32, v: f32) -> [f32; 3] {
        let (w, h) = self.size();
        let gx = (u * w as f32 - 0.5).clamp(0.0, (w.max(1) - 1) as f32);
        let gy = (v * h as f32 - 0.5).clamp(0.0, (h.max(1) - 1) as f32);
        let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
        let at = |x: usize, y: usize| -> [f32; 3] {
            match self {
                OverlayData::Heat { map, .. } => {
                    let s = map.data.get(y * w + x).copied().unwrap_or(0.0);
                    [s, s, s]
                }
                OverlayData::Rgb { map, .. } => {
                    map.data.get(y * w + x).copied().unwrap_or_default()
                }
            }
        };
        let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
        let mut out = [0.0; 3];
        for i in 0..3 {
            let top = a[i] * (1.0 - fx) + b[i] * fx;
            let bot = c[i] * (1.0 - fx) + d[i] * fx;
            out[i] = top * (1.0 - fy) + bot * fy;
        }
        out
    }
}

/// How an overlay looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub colormap: Colormap,
    /// Values mapped to the ends of the colormap.
    pub lo: f32,
    pub hi: f32,
    /// 0 (photo only) to 1 (overlay only).
    pub opacity: f32,
    /// The sub-rectangle of the grid drawn over the rect, `[u0, v0, u1, v1]`.
    pub uv: [f32; 4],
}

impl Default for Look {
    fn default() -> Self {
        Look {
            colormap: Colormap::Turbo,
            lo: 0.0,
            hi: 1.0,
            opacity: 0.6,
            uv: [0.0, 0.0, 1.0, 1.0],
        }
    }
}

/// Marker shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerStyle {
    /// A ring with a dot (best match).
    Ring,
    /// A crosshair (the query point).
    Crosshair,
    /// An x (where a non-mutual match leads back).
    Cross,
    /// A ring without dot (top-k).
    SmallRing,
}

impl MarkerStyle {
    fn code(self) -> f32 {
        match self {
            MarkerStyle::Ring => 0.0,
            MarkerStyle::Crosshair => 1.0,
            MarkerStyle::Cross => 2.0,
            MarkerStyle::SmallRing => 3.0,
        }
    }
}

/// A marker at a point of the rect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marker {
    /// Position as fractions of the rect (0..1).
    pub pos: Vec2,
    /// Radius, points.
    pub radius: f32,
    pub style: MarkerStyle,
    pub color: Color32,
}

/// The uniform block of `overlay.wgsl` (all `vec4<f32>`).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Uniforms {
    rect: [f32; 4],
    uv: [f32; 4],
    range: [f32; 4],
    counts: [f32; 4],
    markers: [[f32; 4]; 2 * MAX_MARKERS],
}

fn colormap_code(c: Colormap) -> f32 {
    match c {
        Colormap::Turbo => 0.0,
        Colormap::Viridis => 1.0,
        Colormap::Gray => 2.0,
    }
}

/// Draws overlays: on the GPU when a wgpu render state was given, else on
/// the CPU.
pub struct Overlay {
    gpu: bool,
    cpu: HashMap<u64, CpuSlot>,
}

struct CpuSlot {
    key: (u64, Colormap, u32, u32, [u32; 4], [usize; 2]),
    texture: TextureHandle,
}

impl Overlay {
    /// Installs the GPU pipeline in `render_state` when given; `None` means
    /// the CPU path (glow renderer, or forced).
    pub fn new(render_state: Option<&egui_wgpu::RenderState>) -> Overlay {
        if let Some(rs) = render_state {
            let resources = GpuResources::new(&rs.device, rs.target_format);
            rs.renderer.write().callback_resources.insert(resources);
        }
        Overlay {
            gpu: render_state.is_some(),
            cpu: HashMap::new(),
        }
    }

    /// Whether overlays are drawn by the wgpu shader.
    pub fn is_gpu(&self) -> bool {
        self.gpu
    }

    /// Draws `data` (if any) and `markers` over `rect`. `slot` identifies the
    /// place on screen: one slot per overlay drawn in a frame.
    pub fn paint(
        &mut self,
        painter: &Painter,
        rect: Rect,
        slot: u64,
        data: Option<&OverlayData>,
        look: &Look,
        markers: &[Marker],
    ) {
        if rect.width() < 1.0 || rect.height() < 1.0 {
            return;
        }
        if data.is_none() {
            // Markers alone are a few egui shapes; a shader pass over the
            // whole rect would cost more on software rasterizers.
            for m in markers {
                paint_marker(painter, rect, m);
            }
            return;
        }
        if self.gpu {
            let ppp = painter.ctx().pixels_per_point();
            let mut u = Uniforms {
                rect: [
                    rect.width() * ppp,
                    rect.height() * ppp,
                    look.opacity.clamp(0.0, 1.0),
                    match data {
                        Some(OverlayData::Rgb { .. }) => 1.0,
                        _ => 0.0,
                    },
                ],
                uv: look.uv,
                range: [look.lo, look.hi, colormap_code(look.colormap), 0.0],
                counts: [markers.len().min(MAX_MARKERS) as f32, ppp, 0.0, 0.0],
                markers: [[0.0; 4]; 2 * MAX_MARKERS],
            };
            for (i, m) in markers.iter().take(MAX_MARKERS).enumerate() {
                u.markers[2 * i] = [m.pos.x, m.pos.y, m.radius * ppp, m.style.code()];
                let c = egui::Rgba::from(m.color);
                // gamma-space colour, as egui's framebuffer expects
                let g = m.color;
                u.markers[2 * i + 1] = [
                    f32::from(g.r()) / 255.0,
                    f32::from(g.g()) / 255.0,
                    f32::from(g.b()) / 255.0,
                    c.a(),
                ];
            }
            painter.add(egui_wgpu::Callback::new_paint_callback(
                rect,
                OverlayCallback {
                    slot,
                    data: data.cloned(),
                    uniforms: u,
                },
            ));
        } else {
            if let Some(data) = data {
                let ppp = painter.ctx().pixels_per_point();
                let tex = self.cpu_texture(painter.ctx(), rect, ppp, slot, data, look);
                let a = (look.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
                painter.image(
                    tex,
                    rect,
                    Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                    Color32::from_white_alpha(a),
                );
            }
            for m in markers {
                paint_marker(painter, rect, m);
            }
        }
    }

    /// The CPU picture of `data` at about the rect's pixel size.
    fn cpu_texture(
        &mut self,
        ctx: &egui::Context,
        rect: Rect,
        ppp: f32,
        slot: u64,
        data: &OverlayData,
        look: &Look,
    ) -> egui::TextureId {
        let (dw, dh) = data.size();
        let uvw = (look.uv[2] - look.uv[0]).abs().max(1e-6);
        let uvh = (look.uv[3] - look.uv[1]).abs().max(1e-6);
        // Not finer than the data, not finer than the screen.
        let w = ((rect.width() * ppp).round() as usize)
            .min(((dw as f32 * uvw).ceil() as usize).max(1))
            .clamp(1, 4096);
        let h = ((rect.height() * ppp).round() as usize)
            .min(((dh as f32 * uvh).ceil() as usize).max(1))
            .clamp(1, 4096);
        let key = (
            data.generation(),
            look.colormap,
            look.lo.to_bits(),
            look.hi.to_bits(),
            look.uv.map(f32::to_bits),
            [w, h],
        );
        if let Some(s) = self.cpu.get(&slot)
            && s.key == key
        {
            return s.texture.id();
        }
        let image = cpu_picture(data, look, w, h);
        let texture = match self.cpu.remove(&slot) {
            Some(mut s) => {
                s.texture.set(image, TextureOptions::LINEAR);
                s.texture
            }
            None => ctx.load_texture(format!("overlay-{slot}"), image, TextureOptions::LINEAR),
        };
        let id = texture.id();
        self.cpu.insert(slot, CpuSlot { key, texture });
        id
    }
}

/// The overlay picture (opaque colours; opacity is applied when drawing) at
/// `w x h` pixels.
pub fn cpu_picture(data: &OverlayData, look: &Look, w: usize, h: usize) -> egui::ColorImage {
    let span = (look.hi - look.lo).max(1e-6);
    let mut pixels = Vec::with_capacity(w * h);
    for y in 0..h {
        let fy = (y as f32 + 0.5) / h as f32;
        let v = look.uv[1] + (look.uv[3] - look.uv[1]) * fy;
        for x in 0..w {
            let fx = (x as f32 + 0.5) / w as f32;
            let u = look.uv[0] + (look.uv[2] - look.uv[0]) * fx;
            let s = data.sample(u, v);
            let rgb = match data {
                OverlayData::Heat { .. } => look.colormap.rgb((s[0] - look.lo) / span),
                OverlayData::Rgb { .. } => s,
            };
            let c = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            pixels.push(Color32::from_rgb(c(rgb[0]), c(rgb[1]), c(rgb[2])));
        }
    }
    egui::ColorImage::new([w, h], pixels)
}

/// A marker as egui shapes (the CPU path; the shader draws the same).
pub fn paint_marker(painter: &Painter, rect: Rect, m: &Marker) {
    let c = rect.min + Vec2::new(m.pos.x * rect.width(), m.pos.y * rect.height());
    let r = m.radius;
    match m.style {
        MarkerStyle::Ring | MarkerStyle::SmallRing => {
            painter.circle_stroke(c, r + 2.0, Stroke::new(1.0, Color32::WHITE));
            painter.circle_stroke(c, r - 2.25, Stroke::new(1.0, Color32::WHITE));
            painter.circle_stroke(c, r, Stroke::new(3.0, m.color));
            if m.style == MarkerStyle::Ring {
                painter.circle_filled(c, 1.5, m.color);
            }
        }
        MarkerStyle::Crosshair => {
            painter.circle_stroke(c, r, Stroke::new(4.0, Color32::from_black_alpha(150)));
            painter.circle_stroke(c, r, Stroke::new(2.4, m.color));
            for d in [Vec2::X, -Vec2::X, Vec2::Y, -Vec2::Y] {
                painter.line_segment(
                    [c + d * r * 0.4, c + d * r * 1.6],
                    Stroke::new(1.8, m.color),
                );
            }
        }
        MarkerStyle::Cross => {
            let k = r * std::f32::consts::FRAC_1_SQRT_2;
            for (a, b) in [
                (Vec2::new(-k, -k), Vec2::new(k, k)),
                (Vec2::new(-k, k), Vec2::new(k, -k)),
            ] {
                painter.line_segment([c + a, c + b], Stroke::new(4.5, Color32::WHITE));
                painter.line_segment([c + a, c + b], Stroke::new(2.1, m.color));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// GPU

/// The pipeline and per-slot textures, kept in egui_wgpu's callback
/// resources.
pub struct GpuResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    slots: HashMap<u64, GpuSlot>,
    /// The framebuffer is sRGB: the shader converts its gamma-space colours.
    srgb_target: bool,
    /// Texture uploads so far (tests check that uploads follow the data's
    /// generation).
    pub uploads: u64,
}

struct GpuSlot {
    generation: u64,
    format: wgpu::TextureFormat,
    size: (u32, u32),
    texture: wgpu::Texture,
    uniform: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    used: Instant,
}

/// Texture uploads done by the GPU overlay of `render_state` so far (tests).
pub fn gpu_uploads(render_state: &egui_wgpu::RenderState) -> Option<u64> {
    render_state
        .renderer
        .read()
        .callback_resources
        .get::<GpuResources>()
        .map(|r| r.uploads)
}

impl GpuResources {
    fn new(device: &wgpu::Device, target: wgpu::TextureFormat) -> GpuResources {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("cleandift overlay"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/overlay.wgsl").into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("cleandift overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(std::mem::size_of::<Uniforms>() as u64),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("cleandift overlay"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("cleandift overlay"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target,
                    blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        GpuResources {
            pipeline,
            layout,
            slots: HashMap::new(),
            srgb_target: target.is_srgb(),
            uploads: 0,
        }
    }
}

/// One overlay in one frame.
struct OverlayCallback {
    slot: u64,
    data: Option<OverlayData>,
    uniforms: Uniforms,
}

impl OverlayCallback {
    /// The grid as texture bytes, shrunk (nearest) to fit `max_side`.
    fn texture_data(&self, max_side: u32) -> (wgpu::TextureFormat, (u32, u32), Vec<u8>, u64) {
        let Some(data) = &self.data else {
            return (
                wgpu::TextureFormat::R32Float,
                (1, 1),
                0f32.to_ne_bytes().to_vec(),
                0,
            );
        };
        let (w, h) = data.size();
        let (w, h) = (w.max(1), h.max(1));
        let max = max_side.max(1) as usize;
        let (tw, th) = if w.max(h) > max {
            let s = max as f64 / w.max(h) as f64;
            (
                ((w as f64 * s).round() as usize).max(1),
                ((h as f64 * s).round() as usize).max(1),
            )
        } else {
            (w, h)
        };
        let src = |x: usize, y: usize| ((y * h / th) * w + x * w / tw, (x, y));
        let bytes = match data {
            OverlayData::Heat { map, .. } => {
                let mut out = Vec::with_capacity(tw * th * 4);
                for y in 0..th {
                    for x in 0..tw {
                        let (i, _) = src(x, y);
                        let v = map.data.get(i).copied().unwrap_or(0.0);
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                }
                out
            }
            OverlayData::Rgb { map, .. } => {
                let mut out = Vec::with_capacity(tw * th * 16);
                for y in 0..th {
                    for x in 0..tw {
                        let (i, _) = src(x, y);
                        let c = map.data.get(i).copied().unwrap_or_default();
                        for v in [c[0], c[1], c[2], 1.0f32] {
                            out.extend_from_slice(&v.to_ne_bytes());
                        }
                    }
                }
                out
            }
        };
        let format = match data {
            OverlayData::Heat { .. } => wgpu::TextureFormat::R32Float,
            OverlayData::Rgb { .. } => wgpu::TextureFormat::Rgba32Float,
        };
        (format, (tw as u32, th as u32), bytes, data.generation())
    }
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<GpuResources>() else {
            return Vec::new();
        };
        let now = Instant::now();
        res.slots
            .retain(|_, s| now.duration_since(s.used) < SLOT_IDLE);
        let generation = self.data.as_ref().map_or(0, OverlayData::generation);
        let fresh = res
            .slots
            .get(&self.slot)
            .is_none_or(|s| s.generation != generation);
        if fresh {
            let (format, size, bytes, generation) =
                self.texture_data(device.limits().max_texture_dimension_2d);
            let bpp = if format == wgpu::TextureFormat::R32Float {
                4
            } else {
                16
            };
            let reuse = res
                .slots
                .get(&self.slot)
                .is_some_and(|s| s.format == format && s.size == size);
            if !reuse {
                let texture = device.create_texture(&wgpu::TextureDescriptor {
                    label: Some("cleandift overlay data"),
                    size: wgpu::Extent3d {
                        width: size.0,
                        height: size.1,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                });
                let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("cleandift overlay uniforms"),
                    size: std::mem::size_of::<Uniforms>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("cleandift overlay"),
                    layout: &res.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::TextureView(&view),
                        },
                    ],
                });
                res.slots.insert(
                    self.slot,
                    GpuSlot {
                        generation,
                        format,
                        size,
                        texture,
                        uniform,
                        bind_group,
                        used: now,
                    },
                );
            }
            if let Some(s) = res.slots.get_mut(&self.slot) {
                queue.write_texture(
                    wgpu::TexelCopyTextureInfo {
                        texture: &s.texture,
                        mip_level: 0,
                        origin: wgpu::Origin3d::ZERO,
                        aspect: wgpu::TextureAspect::All,
                    },
                    &bytes,
                    wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(size.0 * bpp),
                        rows_per_image: Some(size.1),
                    },
                    wgpu::Extent3d {
                        width: size.0,
                        height: size.1,
                        depth_or_array_layers: 1,
                    },
                );
                s.generation = generation;
                res.uploads += 1;
            }
        }
        let srgb = if res.srgb_target { 1.0 } else { 0.0 };
        if let Some(s) = res.slots.get_mut(&self.slot) {
            s.used = now;
            let mut u = self.uniforms;
            u.range[3] = srgb;
            queue.write_buffer(&s.uniform, 0, bytemuck::bytes_of(&u));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<GpuResources>() else {
            return;
        };
        let Some(slot) = res.slots.get(&self.slot) else {
            return;
        };
        render_pass.set_pipeline(&res.pipeline);
        render_pass.set_bind_group(0, &slot.bind_group, &[]);
        render_pass.draw(0..3, 0..1);
    }
}
