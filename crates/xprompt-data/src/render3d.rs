//! Procedural 3-D scenes (spheres, rotated boxes, a floor and a back wall) ray-cast per pixel centre,
//! giving a shaded RGB image with exact camera-space depth (z) and surface normals for every pixel.
//! Camera: pinhole at the origin looking down +z, y up, 60° vertical field of view.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::img::Img;

type V3 = [f32; 3];

fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale(a: V3, s: f32) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn norm(a: V3) -> V3 {
    let l = dot(a, a).sqrt();
    scale(a, 1.0 / l)
}

#[derive(Clone, Debug)]
pub enum Shape {
    Sphere {
        c: V3,
        r: f32,
    },
    /// Box rotated by `yaw` radians about the vertical axis through its centre.
    Cuboid {
        c: V3,
        half: V3,
        yaw: f32,
    },
    /// Plane `dot(n, p) = d`.
    Plane {
        n: V3,
        d: f32,
    },
}

#[derive(Clone, Debug)]
pub struct Object {
    pub shape: Shape,
    pub albedo: V3,
    /// Checker texture period (scene units); 0 = plain.
    pub checker: f32,
}

#[derive(Clone, Debug)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub light: V3,
    pub fov_deg: f32,
}

/// One rendered view: colour, z-depth and camera-frame normals (z towards the viewer).
pub struct Render {
    pub rgb: Img,
    pub depth: Vec<f32>,
    pub normals: Vec<V3>,
    pub w: usize,
    pub h: usize,
}

impl Shape {
    /// Nearest hit distance along the (unit) ray and the outward normal there.
    fn hit(&self, o: V3, d: V3) -> Option<(f32, V3)> {
        const EPS: f32 = 1e-4;
        match *self {
            Shape::Sphere { c, r } => {
                let oc = sub(o, c);
                let b = dot(oc, d);
                let disc = b * b - (dot(oc, oc) - r * r);
                if disc < 0.0 {
                    return None;
                }
                let s = disc.sqrt();
                let t = if -b - s > EPS { -b - s } else { -b + s };
                (t > EPS).then(|| (t, norm(sub(add(o, scale(d, t)), c))))
            }
            Shape::Plane { n, d: off } => {
                let den = dot(n, d);
                if den.abs() < 1e-8 {
                    return None;
                }
                let t = (off - dot(n, o)) / den;
                (t > EPS).then_some((t, n))
            }
            Shape::Cuboid { c, half, yaw } => {
                let (s, co) = yaw.sin_cos();
                // world -> local: rotate by -yaw about y
                let to_local = |v: V3| [co * v[0] - s * v[2], v[1], s * v[0] + co * v[2]];
                let lo = to_local(sub(o, c));
                let ld = to_local(d);
                let (mut tmin, mut tmax) = (f32::NEG_INFINITY, f32::INFINITY);
                let mut axis_min = 0;
                for k in 0..3 {
                    if ld[k].abs() < 1e-9 {
                        if lo[k].abs() > half[k] {
                            return None;
                        }
                        continue;
                    }
                    let t1 = (-half[k] - lo[k]) / ld[k];
                    let t2 = (half[k] - lo[k]) / ld[k];
                    let (a, b) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
                    if a > tmin {
                        tmin = a;
                        axis_min = k;
                    }
                    tmax = tmax.min(b);
                }
                if tmin > tmax || tmin <= EPS {
                    return None;
                }
                let mut ln = [0.0; 3];
                ln[axis_min] = -ld[axis_min].signum();
                // local -> world: rotate by +yaw
                let n = [co * ln[0] + s * ln[2], ln[1], -s * ln[0] + co * ln[2]];
                Some((tmin, n))
            }
        }
    }
}

impl Scene {
    /// A random scene: floor at y = -1, back wall at z = 9.5, 2–4 objects in front.
    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        let mut objects = vec![
            Object {
                shape: Shape::Plane {
                    n: [0.0, 1.0, 0.0],
                    d: -1.0,
                },
                albedo: random_colour(rng, 0.5),
                checker: rng.random_range(0.6..1.6),
            },
            Object {
                shape: Shape::Plane {
                    n: [0.0, 0.0, -1.0],
                    d: -9.5,
                },
                albedo: random_colour(rng, 0.4),
                checker: 0.0,
            },
        ];
        let n = rng.random_range(2..=4);
        for _ in 0..n {
            let z = rng.random_range(2.8..8.0);
            let x = rng.random_range(-0.45..0.45) * z;
            let albedo = random_colour(rng, 0.8);
            let shape = if rng.random_bool(0.5) {
                let r = rng.random_range(0.35..1.0);
                Shape::Sphere {
                    c: [x, -1.0 + r, z],
                    r,
                }
            } else {
                let half = [
                    rng.random_range(0.3..0.9),
                    rng.random_range(0.3..1.1),
                    rng.random_range(0.3..0.9),
                ];
                Shape::Cuboid {
                    c: [x, -1.0 + half[1], z],
                    half,
                    yaw: rng.random_range(0.0..1.5),
                }
            };
            objects.push(Object {
                shape,
                albedo,
                checker: 0.0,
            });
        }
        let light = norm([
            rng.random_range(-0.8..0.8),
            rng.random_range(0.6..1.2),
            rng.random_range(-0.9..-0.2),
        ]);
        Self {
            objects,
            light,
            fov_deg: 60.0,
        }
    }

    fn first_hit(&self, o: V3, d: V3) -> Option<(f32, V3, usize)> {
        let mut best: Option<(f32, V3, usize)> = None;
        for (i, obj) in self.objects.iter().enumerate() {
            if let Some((t, n)) = obj.shape.hit(o, d) {
                if best.is_none_or(|b| t < b.0) {
                    best = Some((t, n, i));
                }
            }
        }
        best
    }

    /// Ray-cast every pixel centre. Pixels with no hit (cannot happen with the wall) get depth 0.
    pub fn render(&self, w: usize, h: usize) -> Render {
        let tan = (self.fov_deg.to_radians() / 2.0).tan();
        let aspect = w as f32 / h as f32;
        let mut rgb = Img::new(w, h, [0.0; 3]);
        let mut depth = vec![0.0; w * h];
        let mut normals = vec![[0.0, 0.0, 1.0]; w * h];
        for y in 0..h {
            for x in 0..w {
                let px = ((x as f32 + 0.5) / w as f32 * 2.0 - 1.0) * tan * aspect;
                let py = (1.0 - (y as f32 + 0.5) / h as f32 * 2.0) * tan;
                let d = norm([px, py, 1.0]);
                let Some((t, mut n, i)) = self.first_hit([0.0; 3], d) else {
                    continue;
                };
                if dot(n, d) > 0.0 {
                    n = scale(n, -1.0);
                }
                let p = scale(d, t);
                depth[y * w + x] = p[2];
                // camera frame for the normal code: z towards the viewer
                normals[y * w + x] = [n[0], n[1], -n[2]];
                let obj = &self.objects[i];
                let mut albedo = obj.albedo;
                if obj.checker > 0.0 {
                    let k = ((p[0] / obj.checker).floor() + (p[2] / obj.checker).floor()) as i64;
                    if k.rem_euclid(2) == 1 {
                        albedo = scale(albedo, 0.6);
                    }
                }
                let lit = dot(n, self.light).max(0.0);
                let shadow = self.first_hit(add(p, scale(n, 1e-3)), self.light).is_some();
                let shade = 0.25 + 0.75 * if shadow { 0.0 } else { lit };
                rgb.set(x, y, scale(albedo, shade).map(|v| v.clamp(0.0, 1.0)));
            }
        }
        Render {
            rgb,
            depth,
            normals,
            w,
            h,
        }
    }
}

fn random_colour(rng: &mut ChaCha8Rng, sat: f32) -> V3 {
    let h = rng.random_range(0.0..360.0);
    let s = rng.random_range(0.2..sat.max(0.21));
    let v = rng.random_range(0.6..1.0);
    crate::img::hsv_to_rgb([h, s, v])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sphere_facing_the_camera_has_exact_depth_and_normal() {
        let scene = Scene {
            objects: vec![Object {
                shape: Shape::Sphere {
                    c: [0.0, 0.0, 5.0],
                    r: 1.0,
                },
                albedo: [1.0; 3],
                checker: 0.0,
            }],
            light: [0.0, 0.0, -1.0],
            fov_deg: 60.0,
        };
        // odd size so that the centre pixel's ray is the optical axis
        let r = scene.render(33, 33);
        let c = 16 * 33 + 16;
        assert!((r.depth[c] - 4.0).abs() < 1e-4, "depth {}", r.depth[c]);
        let n = r.normals[c];
        assert!(
            (n[2] - 1.0).abs() < 1e-4 && n[0].abs() < 1e-4,
            "normal {n:?}"
        );
        assert_eq!(r.depth[0], 0.0, "corner ray misses the sphere");
    }

    #[test]
    fn floor_depth_matches_the_plane_equation() {
        let scene = Scene {
            objects: vec![Object {
                shape: Shape::Plane {
                    n: [0.0, 1.0, 0.0],
                    d: -1.0,
                },
                albedo: [1.0; 3],
                checker: 0.0,
            }],
            light: [0.0, 1.0, 0.0],
            fov_deg: 60.0,
        };
        let (w, h) = (16, 16);
        let r = scene.render(w, h);
        let tan = 30f32.to_radians().tan();
        for y in 9..h {
            let py = (1.0 - (y as f32 + 0.5) / h as f32 * 2.0) * tan;
            // ray (px, py, 1) * z hits y = -1 at z = -1 / py
            let z = -1.0 / py;
            assert!((r.depth[y * w + 3] - z).abs() < 1e-3 * z, "row {y}");
            assert!((r.normals[y * w + 3][1] - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn rotated_box_normals_are_unit_and_face_the_camera() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..5 {
            let r = Scene::random(&mut rng).render(24, 24);
            for (n, d) in r.normals.iter().zip(&r.depth) {
                assert!(*d >= 1.0 && *d <= 9.6, "depth {d} outside the scene box");
                assert!((dot(*n, *n) - 1.0).abs() < 1e-4);
                // visible surfaces face the ray; at the edge of the 60° view that allows a slightly negative z
                assert!(n[2] >= -0.6, "normal points away from the camera: {n:?}");
            }
        }
    }
}
