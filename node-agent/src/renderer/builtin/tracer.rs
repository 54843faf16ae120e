//! The ray tracer: a [`Scene`] posed at one frame, traced row by row.

use super::math::{Vec3, jitter};
use super::scene::{Light, Material, Object, Scene};

/// Rays start this far off a surface so they do not hit it again.
const EPSILON: f64 = 1e-6;

/// The scene at one frame, in the form the tracer wants.
#[derive(Debug)]
pub(crate) struct Posed<'a> {
    eye: Vec3,
    forward: Vec3,
    right: Vec3,
    up: Vec3,
    tan_half_fov: f64,
    shapes: Vec<Shape<'a>>,
    lights: Vec<PosedLight>,
    background: Vec3,
    sky: Vec3,
    ambient: Vec3,
    max_depth: u32,
    fog_distance: Option<f64>,
    seed: u64,
}

#[derive(Debug)]
enum Geometry {
    Sphere {
        center: Vec3,
        radius: f64,
    },
    Plane {
        point: Vec3,
        normal: Vec3,
        u: Vec3,
        v: Vec3,
    },
}

#[derive(Debug)]
struct Shape<'a> {
    geometry: Geometry,
    material: &'a Material,
}

#[derive(Debug)]
enum PosedLight {
    Point { position: Vec3, color: Vec3 },
    Directional { to_light: Vec3, color: Vec3 },
}

/// The value of a keyframed track at `frame`: linear between keys, held
/// outside them. `keys` is non-empty with strictly increasing frames.
fn sample_track<K>(keys: &[K], frame: u32, at: impl Fn(&K) -> u32) -> (&K, &K, f64) {
    let first = &keys[0];
    let last = &keys[keys.len() - 1];
    if frame <= at(first) {
        return (first, first, 0.0);
    }
    if frame >= at(last) {
        return (last, last, 0.0);
    }
    let i = keys.partition_point(|k| at(k) <= frame);
    let (a, b) = (&keys[i - 1], &keys[i]);
    let t = f64::from(frame - at(a)) / f64::from(at(b) - at(a));
    (a, b, t)
}

impl<'a> Posed<'a> {
    /// Poses `scene` at `frame`.
    pub(crate) fn new(scene: &'a Scene, frame: u32) -> Self {
        let (a, b, t) = sample_track(&scene.camera.keyframes, frame, |k| k.frame);
        let eye = Vec3::from_array(a.position).lerp(Vec3::from_array(b.position), t);
        let look = Vec3::from_array(a.look_at).lerp(Vec3::from_array(b.look_at), t);
        let fov = a.fov_degrees + (b.fov_degrees - a.fov_degrees) * t;
        let mut forward = (look - eye).normalized();
        if forward == Vec3::ZERO {
            forward = Vec3::new(0.0, 0.0, -1.0);
        }
        let mut right = forward.cross(Vec3::new(0.0, 1.0, 0.0));
        if right.length() < 1e-9 {
            right = forward.cross(Vec3::new(0.0, 0.0, 1.0));
        }
        let right = right.normalized();
        let up = right.cross(forward);

        let shapes = scene
            .objects
            .iter()
            .map(|o| match o {
                Object::Sphere {
                    center,
                    radius,
                    material,
                    keyframes,
                } => {
                    let center = if keyframes.is_empty() {
                        Vec3::from_array(*center)
                    } else {
                        let (a, b, t) = sample_track(keyframes, frame, |k| k.frame);
                        Vec3::from_array(a.center).lerp(Vec3::from_array(b.center), t)
                    };
                    Shape {
                        geometry: Geometry::Sphere {
                            center,
                            radius: *radius,
                        },
                        material,
                    }
                }
                Object::Plane {
                    point,
                    normal,
                    material,
                } => {
                    let normal = Vec3::from_array(*normal).normalized();
                    let helper = if normal.x.abs() < 0.9 {
                        Vec3::new(1.0, 0.0, 0.0)
                    } else {
                        Vec3::new(0.0, 0.0, 1.0)
                    };
                    let u = helper.cross(normal).normalized();
                    let v = normal.cross(u);
                    Shape {
                        geometry: Geometry::Plane {
                            point: Vec3::from_array(*point),
                            normal,
                            u,
                            v,
                        },
                        material,
                    }
                }
            })
            .collect();
        let lights = scene
            .lights
            .iter()
            .map(|l| match l {
                Light::Point {
                    position,
                    color,
                    intensity,
                } => PosedLight::Point {
                    position: Vec3::from_array(*position),
                    color: Vec3::from_array(*color) * *intensity,
                },
                Light::Directional {
                    direction,
                    color,
                    intensity,
                } => PosedLight::Directional {
                    to_light: -Vec3::from_array(*direction).normalized(),
                    color: Vec3::from_array(*color) * *intensity,
                },
            })
            .collect();
        let background = Vec3::from_array(scene.background);
        Self {
            eye,
            forward,
            right,
            up,
            tan_half_fov: (fov.to_radians() * 0.5).tan(),
            shapes,
            lights,
            background,
            sky: scene.sky.map_or(background, Vec3::from_array),
            ambient: Vec3::from_array(scene.ambient),
            max_depth: scene.max_depth,
            fog_distance: scene.fog_distance,
            seed: 0x5EED_F1A7_0000_0000 ^ u64::from(frame),
        }
    }

    /// Renders row `y` of a `width`×`height` image with `samples` per pixel,
    /// appending 8-bit sRGB triples to `out`.
    pub(crate) fn render_row(
        &self,
        y: u32,
        width: u32,
        height: u32,
        samples: u32,
        out: &mut Vec<u8>,
    ) {
        let aspect = f64::from(width) / f64::from(height);
        // Stratify samples on a k×k grid, jittered inside each cell.
        let k = (1..=samples).find(|k| k * k >= samples).unwrap_or(1);
        let inv = 1.0 / f64::from(samples);
        for x in 0..width {
            let mut sum = Vec3::ZERO;
            for s in 0..samples {
                let (jx, jy) = jitter(x, y, s, self.seed);
                let cx = (f64::from(s % k) + jx) / f64::from(k);
                let cy = (f64::from(s / k) + jy) / f64::from(k);
                let px = (2.0 * (f64::from(x) + cx) / f64::from(width) - 1.0)
                    * self.tan_half_fov
                    * aspect;
                let py = (1.0 - 2.0 * (f64::from(y) + cy) / f64::from(height)) * self.tan_half_fov;
                let dir = (self.forward + self.right * px + self.up * py).normalized();
                sum = sum + self.trace(self.eye, dir, 0);
            }
            let c = sum * inv;
            out.extend([encode(c.x), encode(c.y), encode(c.z)]);
        }
    }

    fn hit(&self, origin: Vec3, dir: Vec3, max_t: f64) -> Option<(f64, usize)> {
        let mut best: Option<(f64, usize)> = None;
        for (i, shape) in self.shapes.iter().enumerate() {
            let limit = best.map_or(max_t, |(t, _)| t);
            if let Some(t) = intersect(&shape.geometry, origin, dir)
                && t < limit
            {
                best = Some((t, i));
            }
        }
        best
    }

    fn trace(&self, origin: Vec3, dir: Vec3, depth: u32) -> Vec3 {
        let Some((t, i)) = self.hit(origin, dir, f64::INFINITY) else {
            let up = dir.y.clamp(0.0, 1.0);
            return self.background.lerp(self.sky, up);
        };
        let shape = &self.shapes[i];
        let m = shape.material;
        let p = origin + dir * t;
        let (mut n, base) = match &shape.geometry {
            Geometry::Sphere { center, radius } => ((p - *center) * (1.0 / radius), m.color),
            Geometry::Plane {
                point,
                normal,
                u,
                v,
                ..
            } => {
                let base = match &m.checker {
                    Some(c) => {
                        let d = p - *point;
                        let a = (d.dot(*u) / c.size).floor() as i64;
                        let b = (d.dot(*v) / c.size).floor() as i64;
                        if (a + b).rem_euclid(2) == 0 {
                            m.color
                        } else {
                            c.color
                        }
                    }
                    None => m.color,
                };
                (*normal, base)
            }
        };
        if n.dot(dir) > 0.0 {
            n = -n;
        }
        let base = Vec3::from_array(base);
        let lift = p + n * (EPSILON * (1.0 + t));
        let mut color = self.ambient.hadamard(base);
        for light in &self.lights {
            let (to_light, distance, radiance) = match light {
                PosedLight::Point { position, color } => {
                    let d = *position - p;
                    let dist = d.length();
                    if dist <= 0.0 {
                        continue;
                    }
                    (d * (1.0 / dist), dist, *color * (1.0 / (dist * dist)))
                }
                PosedLight::Directional { to_light, color } => (*to_light, f64::INFINITY, *color),
            };
            let lambert = n.dot(to_light);
            if lambert <= 0.0 || self.hit(lift, to_light, distance).is_some() {
                continue;
            }
            color = color + base.hadamard(radiance) * (lambert * m.diffuse);
            if m.specular > 0.0 {
                let half = (to_light - dir).normalized();
                let spec = n.dot(half).max(0.0).powi(m.shininess as i32);
                color = color + radiance * (m.specular * spec);
            }
        }
        if m.reflectivity > 0.0 && depth < self.max_depth {
            let r = dir - n * (2.0 * dir.dot(n));
            let reflected = self.trace(lift, r.normalized(), depth + 1);
            color = color * (1.0 - m.reflectivity) + reflected * m.reflectivity;
        }
        if let Some(d) = self.fog_distance {
            color = self.background.lerp(color, (-t / d).exp());
        }
        color
    }
}

/// The nearest positive distance along the ray, if it hits.
fn intersect(g: &Geometry, origin: Vec3, dir: Vec3) -> Option<f64> {
    match g {
        Geometry::Sphere { center, radius } => {
            let oc = origin - *center;
            let b = oc.dot(dir);
            let c = oc.dot(oc) - radius * radius;
            let disc = b * b - c;
            if disc < 0.0 {
                return None;
            }
            let sq = disc.sqrt();
            let t0 = -b - sq;
            if t0 > EPSILON {
                return Some(t0);
            }
            let t1 = -b + sq;
            (t1 > EPSILON).then_some(t1)
        }
        Geometry::Plane { point, normal, .. } => {
            let denom = normal.dot(dir);
            if denom.abs() < 1e-12 {
                return None;
            }
            let t = (*point - origin).dot(*normal) / denom;
            (t > EPSILON).then_some(t)
        }
    }
}

/// Linear value → 8-bit with gamma 2.2.
fn encode(v: f64) -> u8 {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    (v.powf(1.0 / 2.2) * 255.0 + 0.5) as u8
}
