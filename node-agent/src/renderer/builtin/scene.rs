//! The builtin renderer's JSON scene format, with its bounds.

use serde::{Deserialize, Serialize};

use crate::RenderError;

/// The largest scene file accepted, in bytes.
pub const MAX_SCENE_BYTES: usize = 1 << 20;
/// The most objects in a scene.
pub const MAX_OBJECTS: usize = 256;
/// The most lights in a scene.
pub const MAX_LIGHTS: usize = 16;
/// The most keyframes on one animated track.
pub const MAX_KEYFRAMES: usize = 1024;
/// The deepest reflection recursion.
pub const MAX_DEPTH: u32 = 8;
/// The largest image side the builtin renderer draws.
pub const MAX_BUILTIN_SIDE: u32 = 4096;
/// The most samples per pixel the builtin renderer takes.
pub const MAX_BUILTIN_SAMPLES: u32 = 256;
/// Coordinates, sizes and intensities are kept within `±MAX_COORD`.
pub const MAX_COORD: f64 = 1.0e6;

/// A scene: image settings, an animated camera, lights and objects.
/// Unknown fields are refused; [`Scene::parse`] checks every bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    /// Default image width (`1..=MAX_BUILTIN_SIDE`); a job may override it.
    pub width: u32,
    /// Default image height (`1..=MAX_BUILTIN_SIDE`); a job may override it.
    pub height: u32,
    /// Default samples per pixel (`1..=MAX_BUILTIN_SAMPLES`); a job may override it.
    pub samples: u32,
    /// Reflection depth (`0..=MAX_DEPTH`), 3 if absent.
    #[serde(default = "default_depth")]
    pub max_depth: u32,
    /// Colour of rays that hit nothing (linear RGB, `0..=1`), at the horizon.
    #[serde(default)]
    pub background: [f64; 3],
    /// Colour of rays that hit nothing, straight up; `background` if absent.
    #[serde(default)]
    pub sky: Option<[f64; 3]>,
    /// Light that reaches every surface, shadowed or not (linear RGB, `0..=1`).
    #[serde(default)]
    pub ambient: [f64; 3],
    /// Distance over which surfaces fade into `background` (exponential
    /// fog, hiding the far checkerboard's aliasing); no fog if absent.
    #[serde(default)]
    pub fog_distance: Option<f64>,
    /// The camera, keyframed.
    pub camera: Camera,
    /// Up to [`MAX_LIGHTS`] lights.
    #[serde(default)]
    pub lights: Vec<Light>,
    /// Up to [`MAX_OBJECTS`] objects.
    pub objects: Vec<Object>,
}

fn default_depth() -> u32 {
    3
}

/// A camera animated by keyframes (at least one); between keyframes every
/// value is interpolated linearly by frame number, outside them held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Keyframes with strictly increasing frame numbers.
    pub keyframes: Vec<CameraKey>,
}

/// The camera at one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraKey {
    /// Frame number.
    pub frame: u32,
    /// Eye position.
    pub position: [f64; 3],
    /// The point looked at (not the eye position).
    pub look_at: [f64; 3],
    /// Vertical field of view in degrees, `1..=170`.
    pub fov_degrees: f64,
}

/// A light source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Light {
    /// Light from a point, falling off with the square of the distance.
    Point {
        /// Where the light is.
        position: [f64; 3],
        /// Linear RGB, `0..=1`.
        color: [f64; 3],
        /// Brightness at distance 1, `0..=MAX_COORD`.
        intensity: f64,
    },
    /// Light from infinitely far away (the sun).
    Directional {
        /// The direction the light travels (not zero).
        direction: [f64; 3],
        /// Linear RGB, `0..=1`.
        color: [f64; 3],
        /// Brightness, `0..=MAX_COORD`.
        intensity: f64,
    },
}

/// A surface in the scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Object {
    /// A sphere, optionally moving by keyframes.
    Sphere {
        /// Centre (used when there are no keyframes).
        center: [f64; 3],
        /// Radius, greater than 0.
        radius: f64,
        /// Surface.
        material: Material,
        /// Keyframed centres, strictly increasing frames; empty for a still sphere.
        #[serde(default)]
        keyframes: Vec<PositionKey>,
    },
    /// An infinite plane.
    Plane {
        /// A point on the plane.
        point: [f64; 3],
        /// Its normal (not zero).
        normal: [f64; 3],
        /// Surface.
        material: Material,
    },
}

/// An object's position at one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionKey {
    /// Frame number.
    pub frame: u32,
    /// Centre at that frame.
    pub center: [f64; 3],
}

/// How a surface reflects light.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Material {
    /// Base colour, linear RGB `0..=1`.
    pub color: [f64; 3],
    /// Diffuse weight `0..=1`, 0.9 if absent.
    #[serde(default = "default_diffuse")]
    pub diffuse: f64,
    /// Blinn-Phong highlight weight `0..=1`, 0 if absent.
    #[serde(default)]
    pub specular: f64,
    /// Highlight exponent `1..=1000`, 32 if absent.
    #[serde(default = "default_shininess")]
    pub shininess: u32,
    /// Mirror reflection weight `0..=1`, 0 if absent.
    #[serde(default)]
    pub reflectivity: f64,
    /// An optional checker pattern (planes only; ignored on spheres).
    #[serde(default)]
    pub checker: Option<Checker>,
}

fn default_diffuse() -> f64 {
    0.9
}

fn default_shininess() -> u32 {
    32
}

/// A checker pattern alternating the material's colour with another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checker {
    /// The second colour, linear RGB `0..=1`.
    pub color: [f64; 3],
    /// Side of one square, greater than 0.
    pub size: f64,
}

impl Scene {
    /// Parses and checks a scene: at most [`MAX_SCENE_BYTES`], no unknown
    /// fields, every number finite and within its bounds.
    pub fn parse(json: &[u8]) -> Result<Self, RenderError> {
        if json.len() > MAX_SCENE_BYTES {
            return Err(invalid(format!(
                "scene is {} bytes, at most {MAX_SCENE_BYTES} allowed",
                json.len()
            )));
        }
        let scene: Self =
            serde_json::from_slice(json).map_err(|e| invalid(format!("not a scene: {e}")))?;
        scene.check()?;
        Ok(scene)
    }

    fn check(&self) -> Result<(), RenderError> {
        int("width", self.width, 1, MAX_BUILTIN_SIDE)?;
        int("height", self.height, 1, MAX_BUILTIN_SIDE)?;
        int("samples", self.samples, 1, MAX_BUILTIN_SAMPLES)?;
        int("max_depth", self.max_depth, 0, MAX_DEPTH)?;
        color("background", self.background)?;
        if let Some(sky) = self.sky {
            color("sky", sky)?;
        }
        color("ambient", self.ambient)?;
        if let Some(d) = self.fog_distance {
            num("fog_distance", d, 1e-3, MAX_COORD)?;
        }
        keyframes(
            "camera",
            self.camera.keyframes.iter().map(|k| k.frame),
            false,
        )?;
        for k in &self.camera.keyframes {
            point("camera position", k.position)?;
            point("camera look_at", k.look_at)?;
            num("fov_degrees", k.fov_degrees, 1.0, 170.0)?;
            if k.position == k.look_at {
                return Err(invalid(format!(
                    "camera at frame {} looks at its own position",
                    k.frame
                )));
            }
        }
        if self.lights.len() > MAX_LIGHTS {
            return Err(invalid(format!("more than {MAX_LIGHTS} lights")));
        }
        for light in &self.lights {
            match light {
                Light::Point {
                    position,
                    color: c,
                    intensity,
                } => {
                    point("light position", *position)?;
                    color("light color", *c)?;
                    num("light intensity", *intensity, 0.0, MAX_COORD)?;
                }
                Light::Directional {
                    direction,
                    color: c,
                    intensity,
                } => {
                    nonzero("light direction", *direction)?;
                    color("light color", *c)?;
                    num("light intensity", *intensity, 0.0, MAX_COORD)?;
                }
            }
        }
        if self.objects.len() > MAX_OBJECTS {
            return Err(invalid(format!("more than {MAX_OBJECTS} objects")));
        }
        for object in &self.objects {
            match object {
                Object::Sphere {
                    center,
                    radius,
                    material,
                    keyframes: keys,
                } => {
                    point("sphere center", *center)?;
                    num("sphere radius", *radius, f64::MIN_POSITIVE, MAX_COORD)?;
                    self::material(material)?;
                    keyframes("sphere", keys.iter().map(|k| k.frame), true)?;
                    for k in keys {
                        point("sphere keyframe center", k.center)?;
                    }
                }
                Object::Plane {
                    point: p,
                    normal,
                    material,
                } => {
                    point("plane point", *p)?;
                    nonzero("plane normal", *normal)?;
                    self::material(material)?;
                }
            }
        }
        Ok(())
    }
}

fn invalid(message: String) -> RenderError {
    RenderError::SceneInvalid(message)
}

fn int(what: &str, v: u32, lo: u32, hi: u32) -> Result<(), RenderError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(format!("{what} {v} is outside {lo}..={hi}")))
    }
}

fn num(what: &str, v: f64, lo: f64, hi: f64) -> Result<(), RenderError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(format!("{what} {v} is outside {lo}..={hi}")))
    }
}

fn point(what: &str, p: [f64; 3]) -> Result<(), RenderError> {
    p.iter()
        .try_for_each(|&v| num(what, v, -MAX_COORD, MAX_COORD))
}

fn nonzero(what: &str, p: [f64; 3]) -> Result<(), RenderError> {
    point(what, p)?;
    if p.iter().all(|&v| v.abs() < 1e-9) {
        return Err(invalid(format!("{what} is zero")));
    }
    Ok(())
}

fn color(what: &str, c: [f64; 3]) -> Result<(), RenderError> {
    c.iter().try_for_each(|&v| num(what, v, 0.0, 1.0))
}

fn material(m: &Material) -> Result<(), RenderError> {
    color("material color", m.color)?;
    num("material diffuse", m.diffuse, 0.0, 1.0)?;
    num("material specular", m.specular, 0.0, 1.0)?;
    int("material shininess", m.shininess, 1, 1000)?;
    num("material reflectivity", m.reflectivity, 0.0, 1.0)?;
    if let Some(c) = &m.checker {
        color("checker color", c.color)?;
        num("checker size", c.size, 1e-6, MAX_COORD)?;
    }
    Ok(())
}

fn keyframes(
    what: &str,
    frames: impl ExactSizeIterator<Item = u32>,
    may_be_empty: bool,
) -> Result<(), RenderError> {
    let n = frames.len();
    if n > MAX_KEYFRAMES || (n == 0 && !may_be_empty) {
        return Err(invalid(format!(
            "{what} needs {}..={MAX_KEYFRAMES} keyframes, has {n}",
            u8::from(!may_be_empty)
        )));
    }
    let mut last = None;
    for f in frames {
        if last.is_some_and(|l| f <= l) {
            return Err(invalid(format!(
                "{what} keyframes must have strictly increasing frames"
            )));
        }
        last = Some(f);
    }
    Ok(())
}
