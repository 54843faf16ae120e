# Builds the tiny Blender scene the renderer tests render:
#   blender -b --factory-startup --python make_scene.py -- OUT.blend [ENGINE]
# A cube turning over frames 1..3, a camera and a sun; 32x32 px, few samples.
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1 :]
out = argv[0]
engine = argv[1] if len(argv) > 1 else "CYCLES"

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene

bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 0))
cube = bpy.context.active_object
mat = bpy.data.materials.new("orange")
mat.diffuse_color = (1.0, 0.4, 0.1, 1.0)
cube.data.materials.append(mat)
for frame, angle in ((1, 0.0), (3, 1.2)):
    cube.rotation_euler = (0.3, 0.2, angle)
    cube.keyframe_insert(data_path="rotation_euler", frame=frame)

bpy.ops.object.camera_add(location=(5, -5, 4), rotation=(1.0, 0, 0.785))
scene.camera = bpy.context.active_object
bpy.ops.object.light_add(type="SUN", location=(3, -2, 6))
bpy.context.active_object.data.energy = 4.0

world = bpy.data.worlds.new("world")
world.color = (0.2, 0.3, 0.5)
scene.world = world

scene.frame_start = 1
scene.frame_end = 3
scene.render.resolution_x = 32
scene.render.resolution_y = 32
scene.render.resolution_percentage = 100
scene.render.engine = engine
if engine == "CYCLES":
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
elif engine == "BLENDER_EEVEE":
    scene.eevee.taa_render_samples = 4

bpy.ops.wm.save_as_mainfile(filepath=out)
print("FLATRENDER_SCENE_WRITTEN", out)
