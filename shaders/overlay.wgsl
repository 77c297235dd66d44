// CleanDIFT Explorer overlay: similarity heatmaps (colormaps), PCA RGB and
// markers, drawn over a photo's rect by an egui_wgpu paint callback.
//
// The data grid is an R32Float (heatmap) or Rgba32Float (PCA) texture, read
// with textureLoad and interpolated bilinearly by hand (align_corners =
// false, border clamp), so the GPU picture matches the CPU path in
// src/render.rs. Colours are premultiplied, in gamma space (egui's
// framebuffer convention); `srgb_target` converts for sRGB framebuffers.

struct Params {
    // rect width, rect height (physical pixels), opacity, kind
    // (0 = heatmap, 1 = RGB, 2 = markers only)
    rect: vec4<f32>,
    // sub-rectangle of the data texture drawn over the rect: u0, v0, u1, v1
    uv: vec4<f32>,
    // lo, hi (values mapped to the ends of the colormap), colormap
    // (0 = turbo, 1 = viridis, 2 = gray), srgb_target (0 or 1)
    range: vec4<f32>,
    // marker count, pixels per point, 0, 0
    counts: vec4<f32>,
    // per marker two entries: [x, y (fractions of the rect), radius (px), style]
    // and [r, g, b, a]; style 0 = ring, 1 = crosshair, 2 = cross (x), 3 = small ring
    markers: array<vec4<f32>, 64>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var data_tex: texture_2d<f32>;

struct VsOut {
    @builtin(position) position: vec4<f32>,
    @location(0) frac: vec2<f32>,
};

// One triangle covering the callback's viewport (the rect).
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    let x = f32(i32(i & 1u) * 4 - 1);
    let y = f32(i32(i >> 1u) * 4 - 1);
    var out: VsOut;
    out.position = vec4<f32>(x, y, 0.0, 1.0);
    out.frac = vec2<f32>((x + 1.0) * 0.5, (1.0 - y) * 0.5);
    return out;
}

fn turbo(v: f32) -> vec3<f32> {
    let r = 0.1357213 + v * (4.6153926 + v * (-42.660324 + v * (132.13108 + v * (-152.94239 + v * 59.28638))));
    let g = 0.0914026 + v * (2.1941884 + v * (4.8429666 + v * (-14.185033 + v * (4.2772986 + v * 2.829566))));
    let b = 0.1066733 + v * (12.641946 + v * (-60.58205 + v * (110.36277 + v * (-89.90311 + v * 27.34825))));
    return clamp(vec3<f32>(r, g, b), vec3<f32>(0.0), vec3<f32>(1.0));
}

fn viridis(v: f32) -> vec3<f32> {
    let r = 0.277727 + v * (0.105093 + v * (-0.330861 + v * (-4.63423 + v * (6.22827 + v * (4.77638 - v * 5.43546)))));
    let g = 0.005407 + v * (1.404613 + v * (0.214847 + v * (-5.7991 + v * (14.17993 + v * (-13.74514 + v * 4.64585)))));
    let b = 0.334099 + v * (1.38459 + v * (0.095095 + v * (-19.33244 + v * (56.69055 + v * (-65.35303 + v * 26.31244)))));
    return clamp(vec3<f32>(r, g, b), vec3<f32>(0.0), vec3<f32>(1.0));
}

fn colormap(which: i32, t: f32) -> vec3<f32> {
    let v = clamp(t, 0.0, 1.0);
    if which == 1 {
        return viridis(v);
    }
    if which == 2 {
        return vec3<f32>(v, v, v);
    }
    return turbo(v);
}

// Bilinear sample of the data grid at fractional texture coordinates.
fn sample_data(uv: vec2<f32>) -> vec4<f32> {
    let dims_i = vec2<i32>(textureDimensions(data_tex));
    let dims = vec2<f32>(dims_i);
    let g = clamp(uv * dims - vec2<f32>(0.5), vec2<f32>(0.0), dims - vec2<f32>(1.0));
    let g0 = floor(g);
    let f = g - g0;
    let p0 = vec2<i32>(g0);
    let p1 = min(p0 + vec2<i32>(1, 1), dims_i - vec2<i32>(1, 1));
    let v00 = textureLoad(data_tex, vec2<i32>(p0.x, p0.y), 0);
    let v10 = textureLoad(data_tex, vec2<i32>(p1.x, p0.y), 0);
    let v01 = textureLoad(data_tex, vec2<i32>(p0.x, p1.y), 0);
    let v11 = textureLoad(data_tex, vec2<i32>(p1.x, p1.y), 0);
    return mix(mix(v00, v10, f.x), mix(v01, v11, f.x), f.y);
}

// Coverage (0..1) of a band |d - c| <= half_width, antialiased over one pixel.
fn band(d: f32, c: f32, half_width: f32) -> f32 {
    return clamp(half_width + 0.5 - abs(d - c), 0.0, 1.0);
}

// Composites an opaque colour with coverage `a` over a premultiplied colour.
fn over(dst: vec4<f32>, rgb: vec3<f32>, a: f32) -> vec4<f32> {
    return vec4<f32>(rgb * a, a) + dst * (1.0 - a);
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + vec3<f32>(0.055)) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let rect_px = params.rect.xy;
    let opacity = params.rect.z;
    let kind = i32(params.rect.w + 0.5);
    var color = vec4<f32>(0.0);

    if kind == 0 || kind == 1 {
        let uv = mix(params.uv.xy, params.uv.zw, in.frac);
        let v = sample_data(uv);
        var rgb: vec3<f32>;
        if kind == 0 {
            let lo = params.range.x;
            let span = max(params.range.y - lo, 1e-6);
            rgb = colormap(i32(params.range.z + 0.5), (v.r - lo) / span);
        } else {
            rgb = clamp(v.rgb, vec3<f32>(0.0), vec3<f32>(1.0));
        }
        color = vec4<f32>(rgb * opacity, opacity);
    }

    let px = in.frac * rect_px;
    let ppp = max(params.counts.y, 0.5);
    let n = i32(params.counts.x + 0.5);
    for (var i = 0; i < n; i = i + 1) {
        let m = params.markers[2 * i];
        let c = params.markers[2 * i + 1].rgb;
        let centre = m.xy * rect_px;
        let r = m.z;
        let style = i32(m.w + 0.5);
        let d = distance(px, centre);
        let w = 1.5 * ppp;
        if style == 0 || style == 3 {
            // white outline around the coloured ring, as render::draw_marker
            let outline = max(band(d, r + w + 0.5 * ppp, 0.75 * ppp), band(d, r - w - 0.75 * ppp, 0.75 * ppp));
            color = over(color, vec3<f32>(1.0), outline);
            color = over(color, c, band(d, r, w));
            if style == 0 {
                color = over(color, c, clamp(w + 0.5 - d, 0.0, 1.0));
            }
        } else if style == 1 {
            // crosshair: a ring and four ticks
            let dx = abs(px.x - centre.x);
            let dy = abs(px.y - centre.y);
            let tick_h = select(0.0, band(dy, 0.0, w * 0.6), dx > r * 0.4 && dx < r * 1.6);
            let tick_v = select(0.0, band(dx, 0.0, w * 0.6), dy > r * 0.4 && dy < r * 1.6);
            let outline = band(d, r, w + 1.0 * ppp);
            color = over(color, vec3<f32>(0.0), outline * 0.6);
            color = over(color, c, max(band(d, r, w * 0.8), max(tick_h, tick_v)));
        } else {
            // an x: two diagonals inside the radius
            let q = px - centre;
            let d1 = abs(q.x - q.y) * 0.70710678;
            let d2 = abs(q.x + q.y) * 0.70710678;
            let inside = select(0.0, 1.0, d <= r);
            color = over(color, vec3<f32>(1.0), inside * max(band(d1, 0.0, w + ppp), band(d2, 0.0, w + ppp)));
            color = over(color, c, inside * max(band(d1, 0.0, w * 0.7), band(d2, 0.0, w * 0.7)));
        }
    }

    if params.range.w > 0.5 && color.a > 0.0 {
        let straight = color.rgb / color.a;
        color = vec4<f32>(srgb_to_linear(straight) * color.a, color.a);
    }
    return color;
}
